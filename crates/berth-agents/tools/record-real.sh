#!/bin/sh
# Records transcripts of the REAL agent CLIs (from the npm registry) run with the argv the
# adapters build, against tools/mock_model_api.py instead of a real model. This is how the
# tests/transcripts/*/real_* files were made; rerun it to check a new CLI release, then review
# the diff and update the tests' expectations. Needs node, npm, python3 and network access to
# the npm registry. Cursor's CLI is not on npm and is not covered.
#
#   tools/record-real.sh [OUT_DIR]      (default: a new temp dir, printed at the end)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(mktemp -d)}
work=$(mktemp -d)
port=${MOCK_PORT:-18799}
mkdir -p "$out"
cleanup() { [ -n "${mock_pid:-}" ] && kill "$mock_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

npm install --prefix "$work/npm" --no-audit --no-fund \
    @anthropic-ai/claude-code @openai/codex @google/gemini-cli opencode-ai \
    @earendil-works/pi-coding-agent >"$work/npm.log" 2>&1
bin=$work/npm/node_modules/.bin
python3 "$here/mock_model_api.py" "$port" &
mock_pid=$!
sleep 1
api=http://127.0.0.1:$port
prompt='write hello.txt hi there'

# run NAME CLI ARGS… : stdin = $prompt, in a fresh workspace; stdout/stderr to $out/NAME.*
run() {
    name=$1
    shift
    printf '%s\n' "$prompt" | (cd "$ws" && "$@") >"$out/$name.jsonl" 2>"$out/$name.stderr" || true
}
first() { head -n 1 "$out/$1.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

# Claude Code
ws=$work/claude/ws && mkdir -p "$ws" "$work/claude/home"
set -- env HOME="$work/claude/home" ANTHROPIC_BASE_URL="$api" ANTHROPIC_API_KEY=mock \
    DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 "$bin/claude" \
    --print - --output-format stream-json --verbose --allowedTools Write
run claude_success "$@"
run claude_resumed "$@" --resume "$(first claude_success session_id)"
run claude_unknown_session "$@" --resume 0b8c1e44-1111-4222-8333-444455556666

# Codex
ws=$work/codex/ws && mkdir -p "$ws" "$work/codex/home" && git -C "$ws" init -q
cat >"$work/codex/home/config.toml" <<TOML
model = "mock-1"
model_provider = "mock"
[model_providers.mock]
name = "Mock"
base_url = "$api/v1"
env_key = "MOCK_API_KEY"
wire_api = "responses"
TOML
set -- env HOME="$work/codex/home" CODEX_HOME="$work/codex/home" MOCK_API_KEY=mock "$bin/codex" exec --json
run codex_success "$@" --sandbox danger-full-access -
run codex_resumed "$@" resume "$(first codex_success thread_id)" -
run codex_unknown_session "$@" resume 0b8c1e44-1111-4222-8333-444455556666 -

# Gemini CLI
ws=$work/gemini/ws && mkdir -p "$ws" "$work/gemini/home/.gemini"
echo '{"security":{"auth":{"selectedType":"gemini-api-key"}}}' >"$work/gemini/home/.gemini/settings.json"
set -- env HOME="$work/gemini/home" GEMINI_API_KEY=mock GOOGLE_GEMINI_BASE_URL="$api" \
    GEMINI_CLI_TRUST_WORKSPACE=true NO_BROWSER=1 "$bin/gemini" --output-format stream-json -m gemini-2.5-flash --yolo
run gemini_success "$@"
run gemini_resumed "$@" --resume "$(first gemini_success session_id)"
run gemini_unknown_session "$@" --resume 0b8c1e44-1111-4222-8333-444455556666

# OpenCode
ws=$work/opencode/ws && mkdir -p "$ws" "$work/opencode/config/opencode" && git -C "$ws" init -q
cat >"$work/opencode/config/opencode/opencode.json" <<JSON
{"autoupdate":false,"share":"disabled","provider":{"mock":{"npm":"@ai-sdk/openai-compatible","name":"Mock",
 "options":{"baseURL":"$api/v1","apiKey":"mock"},"models":{"mock-1":{"name":"Mock 1","tool_call":true}}}}}
JSON
set -- env HOME="$work/opencode" XDG_CONFIG_HOME="$work/opencode/config" XDG_DATA_HOME="$work/opencode/data" \
    XDG_CACHE_HOME="$work/opencode/cache" XDG_STATE_HOME="$work/opencode/state" OPENCODE_DISABLE_MODELS_FETCH=1 \
    OPENCODE_DISABLE_AUTOUPDATE=1 "$bin/opencode" run --format json --model mock/mock-1
run opencode_success "$@"
run opencode_resumed "$@" --session "$(first opencode_success sessionID)"
run opencode_unknown_session "$@" --session ses_unknown123

# Pi
ws=$work/pi/ws && mkdir -p "$ws" "$work/pi/agent" "$work/pi/sessions"
cat >"$work/pi/agent/models.json" <<JSON
{"providers":{"mock":{"baseUrl":"$api/v1","api":"openai-completions","apiKey":"mock",
 "compat":{"supportsDeveloperRole":false,"supportsReasoningEffort":false},"models":[{"id":"mock-1"}]}}}
JSON
set -- env HOME="$work/pi" PI_CODING_AGENT_DIR="$work/pi/agent" PI_OFFLINE=1 "$bin/pi" --mode json -p \
    --provider mock --model mock-1 --session
run pi_success "$@" "$work/pi/sessions/run1.jsonl"
run pi_resumed "$@" "$work/pi/sessions/run1.jsonl"
run pi_unknown_session "$@" "$work/pi/sessions/unknown-1.jsonl"

for f in "$out"/*.stderr; do [ -s "$f" ] || rm -f "$f"; done
echo "recorded into $out"
