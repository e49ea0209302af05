//! A held lease stays active past its TTL while renewed, and a stale holder learns at once.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;
use std::time::Duration;

use berth_core::lease::{LeaseEvent, RunOutcome};
use berth_core::{LeasePolicy, LeaseStatus};
use berth_engine::holder::HeldLease;
use berth_store::sqlite::SqliteStore;
use berth_store::{AcquireLease, Store};

async fn setup() -> (Arc<dyn Store>, AcquireLease, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", dir.path().join("h.db").display()))
            .await
            .unwrap(),
    );
    let company = store.ensure_default_company().await.unwrap();
    let env = store.ensure_local_environment(company.id).await.unwrap();
    let req = AcquireLease {
        company_id: company.id,
        environment_id: env.id,
        scope_key: "workspace:held".into(),
        policy: LeasePolicy::Ephemeral,
        ttl_secs: 3,
        execution_workspace_id: None,
        issue_id: None,
        run_id: None,
        agent_id: None,
        provider: None,
        provider_lease_id: None,
        metadata: None,
        wait: None,
    };
    (store, req, dir)
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl_and_releases_cleanly() {
    let (store, req, _dir) = setup().await;
    let held = HeldLease::acquire(store.clone(), req).await.unwrap();
    let first = held.snapshot().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        store.expire_due_leases(chrono::Utc::now()).await.unwrap(),
        vec![]
    );
    let now = held.snapshot().await;
    assert!(now.expires_at > first.expires_at, "renewed");
    assert!(!held.lost().is_cancelled());
    let released = held.release(RunOutcome::Succeeded, None).await.unwrap();
    assert_eq!(released.status, LeaseStatus::Released);
}

#[tokio::test]
async fn a_holder_whose_lease_was_expired_is_told_at_the_next_renewal() {
    let (store, req, _dir) = setup().await;
    let held = HeldLease::acquire(store.clone(), req).await.unwrap();
    let lease = held.snapshot().await;
    store
        .transition_lease(lease.id, LeaseEvent::Expire, None)
        .await
        .unwrap();
    let lost = held.lost();
    tokio::time::timeout(Duration::from_secs(3), lost.cancelled())
        .await
        .expect("the holder learns within one renewal period");
    assert!(matches!(
        held.release(RunOutcome::Succeeded, None).await,
        Err(berth_store::StoreError::LeaseLost { .. })
    ));
}
