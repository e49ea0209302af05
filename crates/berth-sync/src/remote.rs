//! The remote side, written once over any [`Transport`]: where a scope's copy lives, the `sh`
//! scripts that list, hash, pack and unpack it, and the plumbing that streams a command's
//! output into a blocking consumer with bounded memory.

use std::io::{self, BufRead, Read};

use berth_exec::shell::quote;
use berth_exec::transport::{RUN_OUTPUT_CAP, RUN_TIMEOUT};
use berth_exec::{Completed, ExecRequest, Output, Stdin, Transport};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::SyncError;
use crate::manifest::{Entry, EntryKind};
use crate::path::{RawBytes, RelPath};

/// Most listing output accepted from the remote (a listing is ~100 bytes per entry).
const LISTING_CAP: usize = 512 * 1024 * 1024;

/// Where a workspace's remote copy lives: `<root>/.berth/ws/<scope>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The environment's Berth root (`remoteWorkspacePath` for ssh).
    pub root: String,
    /// The lease scope key (execution workspace id, run id or agent id).
    pub scope: String,
}

/// Validate an id used in a remote path or a git ref: `^[A-Za-z0-9._-]+$`, not `.`/`..`.
pub fn validate_id(what: &str, id: &str) -> Result<(), SyncError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SyncError::Invalid {
            what: what.to_owned(),
            value: id.to_owned(),
            reason: "must match ^[A-Za-z0-9._-]+$ and not be `.` or `..`".to_owned(),
        })
    }
}

impl RemoteSpec {
    pub fn new(root: impl Into<String>, scope: impl Into<String>) -> Result<Self, SyncError> {
        let s = Self {
            root: root.into(),
            scope: scope.into(),
        };
        validate_id("scope", &s.scope)?;
        if !s.root.starts_with('/') {
            return Err(SyncError::Invalid {
                what: "remote root".to_owned(),
                value: s.root,
                reason: "must be an absolute path".to_owned(),
            });
        }
        Ok(s)
    }

    /// `<root>/.berth/ws` ([`berth_exec::RemoteLayout`]).
    pub fn ws_parent(&self) -> String {
        berth_exec::RemoteLayout::new(&self.root).workspaces_dir()
    }

    /// The remote work tree.
    pub fn ws(&self) -> String {
        berth_exec::RemoteLayout::new(&self.root).workspace_copy(&self.scope)
    }

    /// Berth's own files for this scope (never inside the work tree).
    pub fn meta(&self) -> String {
        format!("{}/.{}.sync", self.ws_parent(), self.scope)
    }
}

/// `records`, each followed by NUL (for `xargs -0` / `tar --null -T -` on stdin).
pub(crate) fn nul_list(records: &[Vec<u8>]) -> Bytes {
    let mut v = Vec::new();
    for r in records {
        v.extend_from_slice(r);
        v.push(0);
    }
    Bytes::from(v)
}

/// Script fragment printing the listing of the current directory (the work tree):
/// `T\0<epoch secs>\0`, optionally `H\0<head sha>\0`, one `E\0type\0mode\0size\0mtime\0path\0
/// target\0` per entry (`.git` pruned), then optionally `I\0` and git's ignored paths.
pub(crate) fn listing_script(git: bool, git_ignored: bool) -> String {
    let mut s = String::from("printf 'T\\0%s\\0' \"$(date +%s)\"\n");
    if git {
        s.push_str("printf 'H\\0%s\\0' \"$(git rev-parse -q --verify HEAD 2>/dev/null)\"\n");
    }
    s.push_str(
        "find . -mindepth 1 \\( -name .git -prune \\) -o -printf 'E\\0%y\\0%m\\0%s\\0%T@\\0%p\\0%l\\0'\n",
    );
    if git && git_ignored {
        s.push_str("printf 'I\\0'\ngit ls-files -z -o -i --exclude-standard --directory\n");
    }
    s
}

/// A git object id as reported by the remote (`HEAD`): exactly 40 (SHA-1) or 64 (SHA-256)
/// lowercase hex digits. Anything else (an abbreviation git would expand, a revision
/// expression, an option such as `--upload-pack=…`) is refused before it reaches `git`.
pub(crate) fn validate_object_id(env: &str, id: &str) -> Result<String, SyncError> {
    let ok =
        matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(id.to_owned())
    } else {
        let shown: String = id.chars().take(100).collect();
        Err(SyncError::Invalid {
            what: format!("remote HEAD reported by {env}"),
            value: shown,
            reason: "not a git object id (40 or 64 lowercase hex digits)".to_owned(),
        })
    }
}

/// A parsed remote listing.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// When the remote listed itself (its clock, whole seconds).
    pub taken_at_ns: i64,
    pub head: Option<String>,
    /// Raw `git ls-files … --directory` output, when requested.
    pub git_ignored: Vec<u8>,
    /// The push marker (`<state id>:<work tree id>`) and the work tree's id now, when asked.
    pub marker: Option<String>,
    pub ws_id: Option<String>,
    /// Entries that are neither file, directory nor symlink (never synced).
    pub special: Vec<RelPath>,
}

fn parse_mtime(s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: i64 = digits.parse().ok()?;
    Some(secs.saturating_mul(1_000_000_000).saturating_add(ns))
}

fn bad_listing(env: &str, detail: impl Into<String>) -> SyncError {
    SyncError::Remote {
        env: env.to_owned(),
        what: "parse the remote workspace listing".to_owned(),
        detail: detail.into(),
    }
}

/// The next NUL-terminated field of a listing into `buf` (without the NUL); `false` at the
/// end of the stream.
fn next_field<R: BufRead>(env: &str, r: &mut R, buf: &mut Vec<u8>) -> Result<bool, SyncError> {
    buf.clear();
    let n = r
        .read_until(0, buf)
        .map_err(|e| bad_listing(env, format!("read: {e}")))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(true)
}

fn field<R: BufRead>(env: &str, r: &mut R, buf: &mut Vec<u8>) -> Result<(), SyncError> {
    if next_field(env, r, buf)? {
        Ok(())
    } else {
        Err(bad_listing(env, "truncated record"))
    }
}

/// Parse a listing held in memory, its entries as a manifest.
#[cfg(test)]
fn parse_listing(env: &str, out: &[u8]) -> Result<(Listing, crate::manifest::Manifest), SyncError> {
    let mut entries = std::collections::BTreeMap::new();
    let l = read_listing(env, &mut &out[..], &mut |e| {
        entries.insert(e.path.clone(), e);
        Ok(())
    })?;
    let m = crate::manifest::Manifest {
        taken_at_ns: l.taken_at_ns,
        entries,
    };
    Ok((l, m))
}

/// Parse a listing as it arrives: each entry goes to `on_entry` (in the remote's walk order);
/// the rest (time, head, marker, special entries, git-ignored paths) is returned.
pub(crate) fn read_listing<R: BufRead>(
    env: &str,
    r: &mut R,
    on_entry: &mut dyn FnMut(Entry) -> Result<(), SyncError>,
) -> Result<Listing, SyncError> {
    let mut l = Listing::default();
    let mut tag = Vec::new();
    let mut f = Vec::new();
    let text = |f: &[u8]| String::from_utf8_lossy(f).trim().to_owned();
    while next_field(env, r, &mut tag)? {
        match tag.as_slice() {
            b"" => {}
            b"T" => {
                field(env, r, &mut f)?;
                let secs: i64 = std::str::from_utf8(&f)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| bad_listing(env, "bad remote time"))?;
                l.taken_at_ns = secs.saturating_mul(1_000_000_000);
            }
            b"M" => {
                field(env, r, &mut f)?;
                l.marker = Some(text(&f));
            }
            b"W" => {
                field(env, r, &mut f)?;
                l.ws_id = Some(text(&f));
            }
            b"H" => {
                field(env, r, &mut f)?;
                let h = text(&f);
                l.head = if h.is_empty() {
                    None
                } else {
                    Some(validate_object_id(env, &h)?)
                };
            }
            b"I" => {
                r.read_to_end(&mut l.git_ignored)
                    .map_err(|e| bad_listing(env, format!("read: {e}")))?;
            }
            b"E" => {
                field(env, r, &mut f)?;
                let ty = match f.as_slice() {
                    b"f" => Some(EntryKind::File),
                    b"d" => Some(EntryKind::Dir),
                    b"l" => Some(EntryKind::Symlink),
                    _ => None,
                };
                field(env, r, &mut f)?;
                let mode = std::str::from_utf8(&f)
                    .ok()
                    .and_then(|m| u32::from_str_radix(m, 8).ok());
                field(env, r, &mut f)?;
                let size: Option<u64> = std::str::from_utf8(&f).ok().and_then(|m| m.parse().ok());
                field(env, r, &mut f)?;
                let mtime_ns = parse_mtime(&f);
                field(env, r, &mut f)?;
                if !f.starts_with(b"./") {
                    return Err(SyncError::unsafe_entry(&f, "listing name without ./"));
                }
                let path = RelPath::from_dot_slash(&f)?;
                field(env, r, &mut f)?;
                let Some(kind) = ty else {
                    l.special.push(path);
                    continue;
                };
                let mode = mode.ok_or_else(|| bad_listing(env, "bad mode"))?;
                let size = size.ok_or_else(|| bad_listing(env, "bad size"))?;
                let mtime_ns = mtime_ns.ok_or_else(|| bad_listing(env, "bad mtime"))?;
                on_entry(Entry {
                    path,
                    kind,
                    mode: mode & 0o7777,
                    size: if kind == EntryKind::Dir { 0 } else { size },
                    mtime_ns,
                    sha256: None,
                    target: (kind == EntryKind::Symlink).then(|| RawBytes(f.clone())),
                })?;
            }
            other => {
                return Err(bad_listing(
                    env,
                    format!("unexpected tag {:?}", String::from_utf8_lossy(other)),
                ));
            }
        }
    }
    Ok(l)
}

/// [`read_listing`] with the entries into a spool in `dir`, handed back in path order.
pub(crate) fn listing_into_spool<R: BufRead>(
    env: &str,
    r: &mut R,
    scratch: &crate::spool::Scratch,
) -> Result<(Listing, crate::spool::Sorted), SyncError> {
    let mut spool = crate::spool::Spool::new(scratch);
    let listing = read_listing(env, r, &mut |e| spool.push(e))?;
    Ok((listing, spool.finish()?))
}

/// A consumer for [`exec_into`] that parses a listing as it streams in, into a spool.
pub(crate) fn spool_listing(
    env: String,
    scratch: crate::spool::Scratch,
) -> impl FnOnce(&mut ChanReader) -> Result<(Listing, crate::spool::Sorted), SyncError> + Send + 'static
{
    move |r| {
        listing_into_spool(
            &env,
            &mut io::BufReader::with_capacity(64 * 1024, r),
            &scratch,
        )
    }
}

/// Script fragment (run inside the work tree) printing the push marker and the work tree's id
/// (inode and birth time), which together say whether this is the copy that was pushed.
pub(crate) fn marker_script(spec: &RemoteSpec) -> String {
    format!(
        "printf 'M\\0%s\\0' \"$(cat {}/state-id 2>/dev/null)\"\nprintf 'W\\0%s\\0' \"$(stat -c %i.%.9W .)\"\n",
        quote(&spec.meta())
    )
}

/// Largest data embedded in a step's script (before base64). Scripts stay well below the SSH
/// control shell's script limit.
pub(crate) const EMBED_MAX: usize = 64 * 1024;

/// Most embedded text (base64 included) one script carries when it embeds two pieces of data,
/// so that it stays below the control shell's script limit with room for the commands around
/// it.
pub(crate) const EMBED_SCRIPT_MAX: usize = 112 * 1024;

/// Standard base64 (with padding) of `data`.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Shell fragment writing `data` to stdout (`printf … | base64 -d`): data for a step that
/// runs on the control shell, which has no stdin. `None` when `data` is too large to embed.
pub(crate) fn embedded(data: &[u8]) -> Option<String> {
    if data.len() > EMBED_MAX {
        return None;
    }
    // The base64 alphabet has no quote: single quotes are safe.
    Some(format!("printf '%s' '{}' | base64 -d", base64(data)))
}

/// Whether bytes to this environment cross no network worth compressing for: the local
/// transport, or SSH to a loopback address. Anything else gets fast gzip.
pub(crate) fn link_is_local(t: &dyn Transport) -> bool {
    let id = t.identity();
    match id.transport.as_str() {
        "local" => true,
        "ssh" => id.host.as_deref().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// A reader over a tar stream that may be gzip-compressed (detected from the magic bytes; a
/// tar stream of `./`-prefixed members never starts with them).
pub(crate) fn maybe_gunzip<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    use std::io::BufRead as _;
    let mut br = io::BufReader::with_capacity(64 * 1024, r);
    let head = br.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(br)))
    } else {
        Ok(Box::new(br))
    }
}

/// Run a short step (bounded by [`RUN_TIMEOUT`]) and collect its output. The script never
/// appears in a process's argv: it goes through the SSH control shell as channel data when
/// there is one, else on an exec channel's stdin ([`framed`]).
pub(crate) async fn step(t: &dyn Transport, script: &str) -> Result<Completed, SyncError> {
    if let Some(c) = t.run_confidential(script).await? {
        return Ok(c);
    }
    let req = framed(ExecRequest::new(script).timeout(RUN_TIMEOUT));
    Ok(t.exec(req).await?.collect(RUN_OUTPUT_CAP).await?)
}

/// `req` with its script moved onto stdin, ahead of the request's own input: the command line
/// is only `eval "$(head -c <length>)"`. Scripts embed file names and contents (base64), and a
/// remote process's argv is readable by every user of the host (`ps`, `/proc/*/cmdline`);
/// stdin is not. GNU `head -c` reads exactly that many bytes, so the rest of stdin is left
/// to the script.
pub(crate) fn framed(req: ExecRequest) -> ExecRequest {
    let script = req.script.into_bytes();
    let cmd = format!("eval \"$(head -c {})\"\n", script.len());
    let stdin = match req.stdin {
        Stdin::Null => Stdin::Bytes(Bytes::from(script)),
        Stdin::Bytes(b) => {
            let mut v = script;
            v.extend_from_slice(&b);
            Stdin::Bytes(Bytes::from(v))
        }
        Stdin::Reader(r) => Stdin::Reader(Box::new(tokio::io::AsyncReadExt::chain(
            io::Cursor::new(script),
            r,
        ))),
    };
    ExecRequest {
        script: cmd,
        stdin,
        timeout: req.timeout,
    }
}

/// Run a step ([`step`]), require success and complete output.
pub(crate) async fn run_collect(
    t: &dyn Transport,
    script: &str,
    what: &str,
) -> Result<Completed, SyncError> {
    let env = t.describe();
    let c = step(t, script).await?;
    if c.stdout_truncated {
        return Err(SyncError::Remote {
            env,
            what: what.to_owned(),
            detail: "output exceeded the step output limit".to_owned(),
        });
    }
    Ok(c.check(&env, what)?)
}

/// `cd <ws>` with a clear error when it is missing.
pub(crate) fn cd_ws(spec: &RemoteSpec) -> String {
    format!("cd {} || exit 3\n", quote(&spec.ws()))
}

/// Run a short step ([`step`]) and require success.
pub(crate) async fn run_ok(
    t: &dyn Transport,
    script: &str,
    what: &str,
) -> Result<Completed, SyncError> {
    let env = t.describe();
    Ok(step(t, script).await?.check(&env, what)?)
}

/// Run a command (own channel, no deadline beyond `req`'s; script on stdin, [`framed`]) and
/// collect its output.
pub(crate) async fn exec_collect(
    t: &dyn Transport,
    req: ExecRequest,
    what: &str,
) -> Result<Completed, SyncError> {
    let env = t.describe();
    let c = t.exec(framed(req)).await?.collect(LISTING_CAP).await?;
    if c.stdout_truncated {
        return Err(SyncError::Remote {
            env,
            what: what.to_owned(),
            detail: format!("output exceeded {LISTING_CAP} bytes"),
        });
    }
    Ok(c.check(&env, what)?)
}

/// A blocking [`Read`] over chunks sent from async code (bounded queue: backpressure).
pub(crate) struct ChanReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    pub(crate) total: u64,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        self.total += n as u64;
        Ok(n)
    }
}

impl ChanReader {
    /// Read to EOF, so the producer is never left blocked.
    pub(crate) fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        while matches!(self.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Run `req` (script on stdin, [`framed`]), feeding its stdout to `consume` on a blocking thread. The command's failure is
/// reported first (its stderr explains a truncated stream); then the consumer's result.
pub(crate) async fn exec_into<T: Send + 'static>(
    t: &dyn Transport,
    req: ExecRequest,
    what: &str,
    consume: impl FnOnce(&mut ChanReader) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    let env = t.describe();
    let mut h = t.exec(framed(req)).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let consumer = tokio::task::spawn_blocking(move || {
        let mut r = ChanReader {
            rx,
            cur: Bytes::new(),
            total: 0,
        };
        let res = consume(&mut r);
        if res.is_ok() {
            r.drain();
        }
        res
    });
    let mut stderr = Vec::new();
    let mut consumer_gone = false;
    while let Some(o) = h.next_output().await {
        match o {
            Output::Stdout(b) => {
                if !consumer_gone && tx.send(b).await.is_err() {
                    // The consumer refused the stream: stop the command.
                    consumer_gone = true;
                    break;
                }
            }
            Output::Stderr(b) => {
                if stderr.len() < 64 * 1024 {
                    stderr.extend_from_slice(&b);
                }
            }
        }
    }
    drop(tx);
    let outcome = if consumer_gone {
        drop(h);
        None
    } else {
        Some(h.wait().await)
    };
    let consumed = consumer.await.map_err(|e| SyncError::Task {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if let Some(outcome) = outcome {
        let outcome = outcome?;
        if !outcome.success() {
            return Err(SyncError::Remote {
                env,
                what: what.to_owned(),
                detail: format!("{outcome}: {}", String::from_utf8_lossy(&stderr).trim()),
            });
        }
    }
    consumed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_parses_entries_head_and_ignored() {
        let out = b"T\x001700000000\x00H\x000123456789abcdef0123456789abcdef01234567\x00E\x00f\x00644\x003\x001700000000.5000000000\x00./a b\x00\x00E\x00l\x00777\x001\x001.0\x00./-l\x00t\nx\x00E\x00p\x00644\x000\x001.0\x00./fifo\x00\x00I\x00node_modules/\x00x.log\x00";
        let (l, m) = parse_listing("e", out).unwrap();
        assert_eq!(
            l.head.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(l.taken_at_ns, 1_700_000_000_000_000_000);
        let a = m.get(&RelPath::new(b"a b".to_vec()).unwrap()).unwrap();
        assert_eq!(a.mtime_ns, 1_700_000_000_500_000_000);
        assert_eq!(a.mode, 0o644);
        let ln = m.get(&RelPath::new(b"-l".to_vec()).unwrap()).unwrap();
        assert_eq!(ln.target, Some(RawBytes(b"t\nx".to_vec())));
        assert_eq!(l.special.len(), 1);
        assert_eq!(l.git_ignored, b"node_modules/\x00x.log\x00");
    }

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x27]), "//4AJw==");
    }

    #[test]
    fn listing_rejects_escaping_names() {
        let out = b"E\x00f\x00644\x001\x001.0\x00./../x\x00\x00";
        assert!(parse_listing("e", out).is_err());
        let out = b"E\x00f\x00644\x001\x001.0\x00/etc/passwd\x00\x00";
        assert!(parse_listing("e", out).is_err());
    }
}
