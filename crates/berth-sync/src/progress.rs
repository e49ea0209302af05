//! Progress of long transfers (bytes, files, rate), delivered through a callback.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Which transfer a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Push,
    Restore,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub files: u64,
    /// Uncompressed content bytes so far.
    pub bytes: u64,
    pub bytes_per_sec: f64,
}

/// A progress callback; cheap to clone, called from a blocking thread.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(Progress) + Send + Sync>);

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

impl ProgressFn {
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

/// Turns stream counters into [`Progress`] reports, at most every 64 files or 4 MiB.
pub(crate) fn reporter(
    cb: Option<ProgressFn>,
    phase: Phase,
) -> impl Fn(crate::archive::StreamStats) + Send + Sync {
    let start = Instant::now();
    let last = std::sync::Mutex::new((0u64, 0u64));
    move |s| {
        let Some(cb) = &cb else { return };
        let Ok(mut l) = last.lock() else { return };
        if s.files.saturating_sub(l.0) < 64 && s.bytes.saturating_sub(l.1) < 4 << 20 && s.files > 1
        {
            return;
        }
        *l = (s.files, s.bytes);
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        (cb.0)(Progress {
            phase,
            files: s.files,
            bytes: s.bytes,
            #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
            bytes_per_sec: s.bytes as f64 / secs,
        });
    }
}
