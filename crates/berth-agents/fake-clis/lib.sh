# shellcheck shell=sh
# FAKE agent-CLI helpers, sourced by the fake `claude`, `codex`, `agent`, `gemini`, `opencode`
# and `pi` scripts beside this file. These are test doubles for Berth's adapter tests, not the
# real CLIs: they parse the real flags, emit the documented event shapes, and do only what a
# prompt line `write <file> <content>` or `fail <message>` asks.
#
# Knobs (environment):
#   FAKE_CLI_LOG=path       append "<cli> <argv…>" (one line per invocation) to this file
#   FAKE_CLI_LINGER=secs    keep running this long after the final result event
#   FAKE_CLI_IGNORE_TERM=1  ignore SIGTERM (inherited by the linger `sleep`)
#   FAKE_CLI_ID_PREFIX=p    prefix every session id this fake mints with p (e.g. `unknown-`, so
#                           that the next resume of it reports an unknown session)
#   FAKE_CLI_IGNORE_RESUME=1  (codex only) start a new thread instead of resuming, silently,
#                           as Codex 0.171 does for an id that is not a UUID
# Session ids starting with `unknown-` are reported as unknown sessions.

fake_start() {
    if [ "${FAKE_CLI_IGNORE_TERM:-}" = 1 ]; then
        trap '' TERM
    fi
    fake_name=$1
    shift
    if [ -n "${FAKE_CLI_LOG:-}" ]; then
        {
            printf '%s' "$fake_name"
            for fake_arg in "$@"; do
                printf ' %s' "$fake_arg"
            done
            printf '\n'
        } >>"$FAKE_CLI_LOG"
    fi
}

# JSON string literal (with quotes) for $1: escapes backslash, quote, tab, CR and newlines.
js() {
    fake_tab=$(printf '\t')
    fake_cr=$(printf '\r')
    printf '"'
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$fake_tab/\\\\t/g" -e "s/$fake_cr/\\\\r/g" |
        awk 'NR > 1 { printf "%s", "\\n" } { printf "%s", $0 }'
    printf '"'
}

# The prompt: the -p/positional text if given, with stdin (when not a terminal) before it.
read_prompt() {
    fake_stdin=""
    if [ ! -t 0 ]; then
        fake_stdin=$(cat)
    fi
    if [ -n "$fake_stdin" ] && [ -n "${1:-}" ]; then
        PROMPT="$fake_stdin
$1"
    else
        PROMPT="$fake_stdin${1:-}"
    fi
}

# Sets ACTION (write|fail|none), FILE, CONTENT, MESSAGE from the last `write …`/`fail …` line.
parse_action() {
    ACTION=none
    FILE=""
    CONTENT=""
    MESSAGE=""
    fake_line=$(printf '%s\n' "$PROMPT" | grep -E '^(write|fail) ' | tail -n 1)
    case "$fake_line" in
        write\ *)
            ACTION=write
            fake_rest=${fake_line#write }
            FILE=${fake_rest%% *}
            CONTENT=${fake_rest#"$FILE"}
            CONTENT=${CONTENT# }
            ;;
        fail\ *)
            ACTION=fail
            MESSAGE=${fake_line#fail }
            ;;
    esac
}

do_write() {
    printf '%s' "$CONTENT" >"$FILE"
}

# A fresh id: [$FAKE_CLI_ID_PREFIX]<prefix><epoch>-<pid>.
new_id() {
    printf '%s%s%s-%s' "${FAKE_CLI_ID_PREFIX:-}" "$1" "$(date +%s)" "$$"
}

is_unknown() {
    case "$1" in
        unknown-*) return 0 ;;
        */unknown-*) return 0 ;;
    esac
    return 1
}

linger() {
    if [ -n "${FAKE_CLI_LINGER:-}" ]; then
        sleep "$FAKE_CLI_LINGER"
    fi
}

need_value() {
    if [ "$2" -lt 2 ]; then
        printf 'error: option %s needs a value\n' "$1" >&2
        exit 2
    fi
}
