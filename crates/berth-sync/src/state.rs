//! Local sync state per workspace, kept next to it (never inside it, never in `/tmp`): the
//! baseline manifests per scope, the lock that serializes syncs into one workspace, and the
//! staging directories on the workspace's filesystem (leftovers of a crash are removed at the
//! next start).

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{EntryReader, read_manifest_head};
use crate::error::SyncError;
use crate::manifest::{Manifest, hash_bytes};
use crate::spool::{SPOOL_ENTRIES, SPOOL_PREFIX, Scratch, SortedFile};

/// The header of the binary state file (the manifests follow it).
#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    state_id: String,
    git: Option<GitPoint>,
    remote_head: Option<String>,
}

impl Header {
    fn new(state_id: &str, git: &Option<GitPoint>, remote_head: &Option<String>) -> Self {
        Self {
            version: STATE_VERSION,
            state_id: state_id.to_owned(),
            git: git.clone(),
            remote_head: remote_head.clone(),
        }
    }
}

/// Version of the binary state file; version 1 was JSON (`scope-<scope>.json`).
const STATE_VERSION: u32 = 2;
const LEGACY_VERSION: u32 = 1;
const MAGIC: &[u8; 17] = b"berth-sync-state\n";
const END: &[u8; 4] = b"end\n";
const STAGING_PREFIX: &str = "staging-";

/// Options shared by push and restore.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Extra exclude patterns (gitignore syntax), on top of `.berthignore`.
    pub excludes: Vec<String>,
    /// Sync git-ignored paths too.
    pub sync_ignored: bool,
    /// Where the sync state lives; default `<parent>/.berth-sync/<name>-<hash>/`, on the same
    /// filesystem as the workspace in every ordinary layout.
    pub state_dir: Option<PathBuf>,
    /// Called with transfer progress (bytes, files, rate).
    pub progress: Option<crate::progress::ProgressFn>,
    /// Entries of a manifest held in memory before the rest is sorted on disk, next to the
    /// state (default [`SPOOL_ENTRIES`]); bounds the memory of a sync of any tree.
    pub spool_entries: Option<usize>,
}

/// Git position recorded at sync-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPoint {
    pub head: String,
    /// Full ref name (`refs/heads/main`), `None` when detached.
    pub branch: Option<String>,
}

/// What one scope's last sync recorded, in memory ([`StateDir::load`]; also the JSON form of
/// the version-1 state file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScopeState {
    pub version: u32,
    /// Also written on the remote at the end of a push: a mismatch means the remote copy is
    /// not the one this state describes, and the next push is a full one.
    pub state_id: String,
    /// The local workspace as pushed (local clock): the restore's baseline.
    pub local: Manifest,
    /// The remote copy as last seen (remote clock), for incremental pushes and lazy hashing.
    pub remote: Manifest,
    /// Local HEAD and branch at push.
    pub git: Option<GitPoint>,
    /// The commit the remote's HEAD is known to be at.
    pub remote_head: Option<String>,
}

/// A scope's recorded state with its manifests on disk ([`StateDir::open`]).
#[derive(Debug, Clone)]
pub struct StoredState {
    pub state_id: String,
    pub git: Option<GitPoint>,
    pub remote_head: Option<String>,
    /// The local workspace as pushed: the restore's baseline.
    pub local: SortedFile,
    /// The remote copy as last seen.
    pub remote: SortedFile,
}

/// Counts the bytes read through it.
struct Counting<R> {
    r: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Paths of the state of one workspace.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
    /// Entries a spool keeps in memory ([`SyncOptions::spool_entries`]).
    spool_entries: usize,
}

impl StateDir {
    pub fn for_workspace(ws: &Path, opts: &SyncOptions) -> Result<Self, SyncError> {
        let dir = match &opts.state_dir {
            Some(d) => d.clone(),
            None => {
                let parent = ws.parent().ok_or_else(|| SyncError::Invalid {
                    what: "workspace".to_owned(),
                    value: ws.display().to_string(),
                    reason: "has no parent directory for the sync state".to_owned(),
                })?;
                let name = ws
                    .file_name()
                    .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                    .unwrap_or_default();
                let h = hash_bytes(ws.as_os_str().as_bytes());
                parent
                    .join(".berth-sync")
                    .join(format!("{name}-{}", &h[..12]))
            }
        };
        // Resolve the longest existing prefix, so `..` and symlinks cannot hide the overlap.
        let resolved = dir
            .ancestors()
            .find_map(|a| {
                let rest = dir.strip_prefix(a).ok()?;
                fs::canonicalize(a).ok().map(|c| c.join(rest))
            })
            .unwrap_or_else(|| dir.clone());
        if resolved.starts_with(ws) || dir.starts_with(ws) {
            // It would be scanned, pushed and restored as part of the workspace.
            return Err(SyncError::Invalid {
                what: "sync state dir".to_owned(),
                value: dir.display().to_string(),
                reason: "must be outside the workspace".to_owned(),
            });
        }
        fs::create_dir_all(&dir)
            .map_err(|e| SyncError::io("create the sync state dir", &dir, e))?;
        Ok(Self {
            dir,
            spool_entries: opts.spool_entries.unwrap_or(SPOOL_ENTRIES),
        })
    }

    /// Where this workspace's spools and sorted manifests go.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            dir: self.dir.clone(),
            spool_entries: self.spool_entries,
        }
    }

    fn scope_file(&self, scope: &str) -> PathBuf {
        self.dir.join(format!("scope-{scope}.state"))
    }

    /// The JSON state of earlier versions, still read so an upgrade keeps its baselines.
    fn legacy_file(&self, scope: &str) -> PathBuf {
        self.dir.join(format!("scope-{scope}.json"))
    }

    /// Whether a state is recorded for `scope` (without reading it).
    pub fn has_state(&self, scope: &str) -> bool {
        self.scope_file(scope).exists() || self.legacy_file(scope).exists()
    }

    /// The recorded state with both manifests in memory.
    pub fn load(&self, scope: &str) -> Result<Option<ScopeState>, SyncError> {
        let Some(st) = self.open(scope)? else {
            return Ok(None);
        };
        Ok(Some(ScopeState {
            version: STATE_VERSION,
            state_id: st.state_id,
            local: st.local.to_manifest()?,
            remote: st.remote.to_manifest()?,
            git: st.git,
            remote_head: st.remote_head,
        }))
    }

    /// The recorded state with its manifests left on disk, read as streams: what it holds
    /// in memory does not grow with the tree. The file is checked from end to end first
    /// (magic, header, every entry, order, end marker).
    pub fn open(&self, scope: &str) -> Result<Option<StoredState>, SyncError> {
        let p = self.scope_file(scope);
        let file = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self
                    .load_legacy(scope)?
                    .map(|st| self.stored(st))
                    .transpose();
            }
            Err(e) => return Err(SyncError::io("read the sync state", &p, e)),
        };
        let bad = |detail: String| SyncError::State {
            path: p.clone(),
            detail,
        };
        let file = std::sync::Arc::new(file);
        let mut r = Counting {
            r: std::io::BufReader::with_capacity(64 * 1024, &*file),
            n: 0,
        };
        let mut magic = [0u8; MAGIC.len()];
        r.read_exact(&mut magic)
            .map_err(|e| bad(format!("not a sync state file: {e}")))?;
        if magic != *MAGIC {
            return Err(bad("not a sync state file".to_owned()));
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|e| bad(e.to_string()))?;
        let len = u32::from_le_bytes(len);
        if len > 1024 * 1024 {
            return Err(bad(format!("header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        r.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
        let h: Header = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        if h.version != STATE_VERSION {
            return Err(bad(format!("unsupported version {}", h.version)));
        }
        let mut sections = Vec::with_capacity(2);
        for which in ["local", "remote"] {
            let (taken_at_ns, count) =
                read_manifest_head(&mut r).map_err(|e| bad(format!("{which} manifest: {e}")))?;
            let start = r.n;
            for e in EntryReader::new(&mut r, count) {
                e.map_err(|e| bad(format!("{which} manifest: {e}")))?;
            }
            sections.push(SortedFile::section(
                file.clone(),
                p.clone(),
                start,
                r.n - start,
                count,
                taken_at_ns,
            ));
        }
        let mut end = [0u8; END.len()];
        r.read_exact(&mut end)
            .map_err(|e| bad(format!("truncated: {e}")))?;
        let mut extra = [0u8; 1];
        if end != *END || r.read(&mut extra).map_err(|e| bad(e.to_string()))? != 0 {
            return Err(bad("trailing data".to_owned()));
        }
        let remote = sections.pop();
        let local = sections.pop();
        let (Some(local), Some(remote)) = (local, remote) else {
            return Err(bad("missing manifests".to_owned()));
        };
        Ok(Some(StoredState {
            state_id: h.state_id,
            git: h.git,
            remote_head: h.remote_head,
            local,
            remote,
        }))
    }

    /// A state read into memory, as one with its manifests on disk.
    fn stored(&self, st: ScopeState) -> Result<StoredState, SyncError> {
        Ok(StoredState {
            local: SortedFile::from_manifest(&self.dir, &st.local)?,
            remote: SortedFile::from_manifest(&self.dir, &st.remote)?,
            state_id: st.state_id,
            git: st.git,
            remote_head: st.remote_head,
        })
    }

    fn load_legacy(&self, scope: &str) -> Result<Option<ScopeState>, SyncError> {
        let p = self.legacy_file(scope);
        let file = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SyncError::io("read the sync state", &p, e)),
        };
        let st: ScopeState =
            serde_json::from_reader(std::io::BufReader::with_capacity(64 * 1024, file)).map_err(
                |e| SyncError::State {
                    path: p.clone(),
                    detail: e.to_string(),
                },
            )?;
        if st.version != LEGACY_VERSION {
            return Err(SyncError::State {
                path: p,
                detail: format!("unsupported version {}", st.version),
            });
        }
        Ok(Some(st))
    }

    /// Save a state whose manifests are on disk (streamed from one file into the other).
    pub fn save_sorted(&self, scope: &str, st: &StoredState) -> Result<(), SyncError> {
        let header = Header::new(&st.state_id, &st.git, &st.remote_head);
        self.write(scope, &header, |w| {
            for m in [&st.local, &st.remote] {
                w.write_all(&m.taken_at_ns.to_le_bytes())?;
                w.write_all(&m.count.to_le_bytes())?;
                m.copy_entries_to(w)?;
            }
            Ok(())
        })
    }

    /// Replace the state file of `scope` with `header` and the manifests `body` writes.
    fn write(
        &self,
        scope: &str,
        header: &Header,
        body: impl FnOnce(&mut std::io::BufWriter<fs::File>) -> std::io::Result<()>,
    ) -> Result<(), SyncError> {
        let p = self.scope_file(scope);
        let tmp = self.dir.join(format!(".scope-{scope}.state.tmp"));
        // Streamed: no copy of the whole state in memory.
        let file =
            fs::File::create(&tmp).map_err(|e| SyncError::io("write the sync state", &tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
        let header = serde_json::to_vec(header).map_err(|e| SyncError::State {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        let written = (|| {
            w.write_all(MAGIC)?;
            w.write_all(
                &u32::try_from(header.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            )?;
            w.write_all(&header)?;
            body(&mut w)?;
            w.write_all(END)?;
            w.flush()
        })();
        written.map_err(|e| SyncError::io("write the sync state", &tmp, e))?;
        drop(w);
        fs::rename(&tmp, &p).map_err(|e| SyncError::io("replace the sync state", &p, e))?;
        match fs::remove_file(self.legacy_file(scope)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %e, "could not remove the legacy sync state");
            }
            _ => {}
        }
        Ok(())
    }

    /// Take the workspace's sync lock (waits for a holder; released on drop or crash), then
    /// remove what an interrupted sync left behind.
    pub async fn lock(&self) -> Result<WorkspaceLock, SyncError> {
        let p = self.dir.join("lock");
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| SyncError::io("open the sync lock", &p, e))?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| SyncError::Task {
                what: "take the sync lock".to_owned(),
                detail: e.to_string(),
            })?
            .map_err(|e| SyncError::io("take the sync lock", &p, e))?;
        let lock = WorkspaceLock { _file: locked };
        let stale = self.clean_leftovers()?;
        if stale > 0 {
            tracing::info!(stale, "removed leftovers of an interrupted sync");
        }
        Ok(lock)
    }

    /// Remove staging directories left by a crashed restore and spool files left by a crash
    /// between their creation and their unlinking. Call with the lock held.
    fn clean_leftovers(&self) -> Result<usize, SyncError> {
        let mut n = 0;
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| SyncError::io("list the sync state", &self.dir, e))?;
        for item in rd.flatten() {
            let name = item.file_name();
            let p = item.path();
            if name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
                fs::remove_dir_all(&p).map_err(|e| SyncError::io("remove stale staging", &p, e))?;
                n += 1;
            } else if name.as_bytes().starts_with(SPOOL_PREFIX.as_bytes()) {
                fs::remove_file(&p).map_err(|e| SyncError::io("remove a stale spool", &p, e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// A fresh staging directory (0700), removed on drop.
    pub fn staging(&self, run: &str) -> Result<Staging, SyncError> {
        let p = self.dir.join(format!(
            "{STAGING_PREFIX}{run}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(|e| SyncError::io("create a staging dir", &p, e))?;
        Ok(Staging { dir: p })
    }
}

/// Held while a push or restore touches the workspace.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: fs::File,
}

/// A staging directory, removed when dropped.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh id for a recorded state (and the remote marker that names it).
pub(crate) fn new_state_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
