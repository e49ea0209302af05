//! Holding a lease while work runs (SPEC §5): renew every ttl/3, and the moment a renewal
//! says the lease is lost (stale fence, expired, released by someone else) cancel the work.
//! A transient store error is retried until the lease would expire; it never silently keeps
//! running on a lease it no longer holds.

use std::sync::Arc;
use std::time::Duration;

use berth_core::CleanupStatus;
use berth_core::lease::RunOutcome;
use berth_core::model::Lease;
use berth_store::{AcquireLease, Store, StoreError};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A lease being held: renewed in the background until released.
pub struct HeldLease {
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Lease>>,
    lost: CancellationToken,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("lost", &self.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl HeldLease {
    /// Acquire (waiting per `request.wait`) and start renewing.
    pub async fn acquire(store: Arc<dyn Store>, request: AcquireLease) -> Result<Self, StoreError> {
        let ttl = request.ttl_secs.max(3);
        let lease = store.acquire_lease(request).await?;
        Ok(Self::hold(store, lease, ttl))
    }

    /// Start renewing an already acquired lease.
    pub fn hold(store: Arc<dyn Store>, lease: Lease, ttl_secs: i64) -> Self {
        let lost = CancellationToken::new();
        let shared = Arc::new(Mutex::new(lease));
        let renewer = tokio::spawn(renew_loop(
            store.clone(),
            shared.clone(),
            ttl_secs,
            lost.clone(),
        ));
        Self {
            store,
            lease: shared,
            lost,
            renewer,
        }
    }

    /// Cancelled the moment the lease is lost: the holder must stop its work at once.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    pub async fn snapshot(&self) -> Lease {
        self.lease.lock().await.clone()
    }

    /// Stop renewing and release by outcome. A lease already lost answers `LeaseLost`.
    pub async fn release(
        self,
        outcome: RunOutcome,
        cleanup: Option<CleanupStatus>,
    ) -> Result<Lease, StoreError> {
        self.renewer.abort();
        let lease = self.lease.lock().await.clone();
        self.store
            .release_lease(lease.id, lease.fence, outcome, cleanup)
            .await
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew_loop(
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Lease>>,
    ttl_secs: i64,
    lost: CancellationToken,
) {
    let period = Duration::from_millis((ttl_secs as u64 * 1000) / 3);
    loop {
        tokio::time::sleep(period).await;
        let (id, fence, expires_at) = {
            let l = lease.lock().await;
            (l.id, l.fence, l.expires_at)
        };
        match store.renew_lease(id, fence, ttl_secs).await {
            Ok(renewed) => *lease.lock().await = renewed,
            Err(StoreError::LeaseLost { reason, .. }) => {
                tracing::warn!(lease_id = %id, %reason, "lease lost; stopping the work that held it");
                lost.cancel();
                return;
            }
            Err(e) => {
                // Transient: keep trying while the lease can still be valid.
                tracing::warn!(lease_id = %id, error = %e, "lease renewal failed; retrying");
                if chrono::Utc::now() >= expires_at {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
