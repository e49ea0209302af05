//! One conformance suite for both backends: every scenario below runs as `sqlite::<name>` (a
//! temp-file database) and `postgres::<name>` (a fresh database per test from
//! `berth_testkit::pg`; skipped loudly when PostgreSQL is absent, failed under `CI=true`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_core::lease::{LeaseEvent, RunOutcome, release_target};
use berth_core::model::*;
use berth_core::*;
use berth_store::postgres::PgStore;
use berth_store::sqlite::SqliteStore;
use berth_store::*;
use berth_testkit::pg::TestDatabase;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

// ---- fixtures -------------------------------------------------------------------------------

pub struct Fx {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

async fn sqlite_fx() -> Option<Fx> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url).await.unwrap();
    Some(Fx {
        store: Arc::new(store),
        url,
        _dir: Some(dir),
        _db: None,
    })
}

async fn postgres_fx() -> Option<Fx> {
    let db = TestDatabase::create_or_skip().await.unwrap()?;
    let store = PgStore::connect(db.url()).await.unwrap();
    Some(Fx {
        store: Arc::new(store),
        url: db.url().to_string(),
        _dir: None,
        _db: Some(db),
    })
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fx = super::sqlite_fx().await.unwrap();
                    super::$name(&fx).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(fx) = super::postgres_fx().await {
                        super::$name(&fx).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    ensure_local_is_idempotent_under_16_concurrent_callers,
    ensure_default_company_creates_one_company_under_concurrency,
    host_execution_is_granted_to_the_first_company_only,
    remote_sessions_are_saved_replaced_and_runs_reclaimed_after_a_restart,
    one_instance_at_a_time_holds_the_reaper_lock,
    pre_launch_runs_of_a_silent_instance_are_claimed_back,
    the_latest_saved_session_is_the_agents_newest_on_the_same_workspace,
    two_instances_of_32_acquirers_never_double_grant_or_exceed_capacity,
    second_local_environment_is_a_conflict,
    environment_names_are_unique_on_create_and_rename,
    failed_create_environment_writes_nothing,
    managed_local_cannot_be_archived_or_deleted,
    update_environment_patches_and_rotates_secrets,
    company_default_environment_must_belong_to_the_company,
    lease_acquire_renew_release_checks_the_fence,
    renew_after_expiry_is_lost,
    expire_due_leases_expires_overdue_leases_and_queues_cleanup,
    overdue_active_lease_does_not_block_its_scope,
    illegal_transitions_are_refused,
    fences_increase_strictly_across_environments,
    single_flight_64_acquirers_without_waiting_exactly_one_wins,
    single_flight_64_waiters_are_served_one_after_another,
    capacity_waiters_are_woken_in_fifo_order,
    a_lease_awaiting_adoption_keeps_its_capacity_slot,
    bounded_wait_times_out,
    release_by_outcome_follows_the_policy_table,
    retained_lease_is_resumed_by_the_next_acquirer_of_its_scope,
    lease_metadata_and_listing,
    delete_environment_refuses_local_default_and_active_leases,
    force_delete_environment_clears_every_reference,
    environment_references_count_every_selection,
    secrets_crud_and_unique_names,
    agents_crud_and_in_use_refusal,
    projects_issues_and_workspaces_crud,
    pagination_follows_cursors,
    runs_lifecycle_and_terminal_status_is_final,
    claim_next_run_never_double_claims,
    cancel_requests_reach_the_claiming_instance_only,
    runs_of_a_gone_executor_are_failed,
    runs_on_leases_expired_past_the_grace_are_failed,
    append_run_event_numbers_events_without_gaps_under_concurrency,
    tokens_are_found_by_hash_and_revoked,
    experimental_settings_round_trip,
    activity_is_logged_and_listed,
    unknown_stored_enum_is_corrupt_not_defaulted,
    export_import_round_trip_from_sqlite,
    status_counts_group_runs_and_leases,
);

// ---- helpers --------------------------------------------------------------------------------

async fn company(s: &dyn Store) -> Company {
    s.create_company(&format!("acme-{}", uuid::Uuid::new_v4()))
        .await
        .unwrap()
}

fn new_env(company_id: CompanyId, name: &str, capacity: Option<i64>) -> NewEnvironment {
    NewEnvironment {
        company_id,
        name: name.into(),
        description: Some("a test host".into()),
        driver: Driver::Ssh,
        status: EnvironmentStatus::Active,
        config: json!({"host": "example.test", "port": 22, "username": "dev",
                       "remoteWorkspacePath": "/srv/berth"}),
        metadata: None,
        capacity,
        lease_policy: LeasePolicy::ReuseByExecutionWorkspace,
    }
}

async fn env(s: &dyn Store, company_id: CompanyId, capacity: Option<i64>) -> Environment {
    let name = format!("ssh-{}", uuid::Uuid::new_v4());
    s.create_environment(new_env(company_id, &name, capacity), vec![])
        .await
        .unwrap()
}

fn req(e: &Environment, scope: &str, policy: LeasePolicy, wait: Option<Duration>) -> AcquireLease {
    AcquireLease {
        company_id: e.company_id,
        environment_id: e.id,
        scope_key: scope.into(),
        policy,
        ttl_secs: 600,
        execution_workspace_id: None,
        issue_id: None,
        run_id: None,
        agent_id: None,
        provider: None,
        provider_lease_id: None,
        metadata: None,
        wait,
    }
}

fn secret(company_id: CompanyId, name: &str) -> NewSecret {
    NewSecret {
        id: SecretId::new(),
        company_id,
        name: name.into(),
        description: None,
        ciphertext: vec![1, 2, 3, 4],
        nonce: vec![9; 24],
    }
}

fn secret_ref(id: SecretId) -> Value {
    json!({"type": "secret_ref", "secretId": id, "version": "latest"})
}

fn conflict_code(e: &StoreError) -> Option<ConflictCode> {
    match e {
        StoreError::Conflict { code, .. } => Some(*code),
        _ => None,
    }
}

fn assert_lost(r: Result<Lease, StoreError>) {
    match r {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

async fn agent(s: &dyn Store, company_id: CompanyId) -> Agent {
    s.create_agent(NewAgent {
        company_id,
        name: "coder".into(),
        adapter_type: "claude_local".into(),
        adapter_config: json!({"model": "x"}),
        default_environment_id: None,
        grants: vec![],
    })
    .await
    .unwrap()
}

async fn new_run(s: &dyn Store, company_id: CompanyId, agent_id: AgentId) -> Run {
    s.create_run(NewRun {
        company_id,
        agent_id,
        issue_id: None,
        execution_workspace_id: None,
        prompt: "do it".into(),
    })
    .await
    .unwrap()
}

// ---- companies and environments -------------------------------------------------------------

async fn ensure_local_is_idempotent_under_16_concurrent_callers(fx: &Fx) {
    // A company without a local environment only exists through an import.
    let c = Company {
        id: CompanyId::new(),
        name: "bare".into(),
        default_environment_id: None,
        host_execution: false,
        created_at: Utc::now().with_timezone(&Utc),
    };
    let c = Company {
        created_at: chrono::DateTime::from_timestamp_micros(c.created_at.timestamp_micros())
            .unwrap(),
        ..c
    };
    fx.store
        .import_all(Dump {
            companies: vec![c.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = fx.store.clone();
            tokio::spawn(async move { s.ensure_local_environment(c.id).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let e = t.await.unwrap().unwrap();
        assert!(e.is_managed_local());
        assert_eq!(e.name, "Local");
        assert_eq!(
            e.metadata,
            Some(json!({"managedByBerth": true, "defaultForCompany": true}))
        );
        ids.insert(e.id);
    }
    assert_eq!(ids.len(), 1);
    let locals = fx
        .store
        .list_environments(
            c.id,
            &EnvironmentFilter {
                driver: Some(Driver::Local),
                status: None,
            },
            &Page::all(),
        )
        .await
        .unwrap();
    assert_eq!(locals.items.len(), 1);
    // And again on an existing one: untouched.
    let again = fx.store.ensure_local_environment(c.id).await.unwrap();
    assert_eq!(again, locals.items[0]);
    // Unknown company.
    assert!(matches!(
        fx.store.ensure_local_environment(CompanyId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn host_execution_is_granted_to_the_first_company_only(fx: &Fx) {
    let first = fx.store.ensure_default_company().await.unwrap();
    assert!(
        first.host_execution,
        "the install's own company runs on its host"
    );
    let other = company(fx.store.as_ref()).await;
    assert!(
        !other.host_execution,
        "a tenant needs an instance admin's grant"
    );
    let granted = fx
        .store
        .set_company_host_execution(other.id, true)
        .await
        .unwrap();
    assert!(granted.host_execution);
    let read = fx.store.get_company(other.id).await.unwrap().unwrap();
    assert!(read.host_execution);
    fx.store
        .set_company_host_execution(other.id, false)
        .await
        .unwrap();
    assert!(
        !fx.store
            .get_company(other.id)
            .await
            .unwrap()
            .unwrap()
            .host_execution
    );
    assert!(matches!(
        fx.store
            .set_company_host_execution(CompanyId::new(), true)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn ensure_default_company_creates_one_company_under_concurrency(fx: &Fx) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = fx.store.clone();
            tokio::spawn(async move { s.ensure_default_company().await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let c = t.await.unwrap().unwrap();
        assert_eq!(c.name, "default");
        ids.insert(c.id);
    }
    assert_eq!(ids.len(), 1);
    let all = fx.store.list_companies(&Page::all()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    let id = all.items[0].id;
    assert_eq!(
        fx.store.get_company(id).await.unwrap().unwrap().name,
        "default"
    );
    let envs = fx
        .store
        .list_environments(id, &EnvironmentFilter::default(), &Page::all())
        .await
        .unwrap();
    assert_eq!(envs.items.len(), 1);
    assert!(envs.items[0].is_managed_local());
    // A later company does not change which one is the default.
    company(&*fx.store).await;
    assert_eq!(fx.store.ensure_default_company().await.unwrap().id, id);
}

async fn second_local_environment_is_a_conflict(fx: &Fx) {
    let c = company(&*fx.store).await;
    let mut n = new_env(c.id, "another local", None);
    n.driver = Driver::Local;
    n.config = json!({});
    let err = fx.store.create_environment(n, vec![]).await.unwrap_err();
    assert_eq!(
        conflict_code(&err),
        Some(ConflictCode::LocalEnvironmentExists)
    );
    assert_eq!(
        err.to_string(),
        "A local environment already exists for this company."
    );
    // Changing an ssh environment into a local one is refused the same way.
    let e = env(&*fx.store, c.id, None).await;
    let err = fx
        .store
        .update_environment(
            e.id,
            EnvironmentPatch {
                driver: Some(Driver::Local),
                config: Some(json!({})),
                ..Default::default()
            },
            vec![],
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(
        conflict_code(&err),
        Some(ConflictCode::LocalEnvironmentExists)
    );
}

async fn environment_names_are_unique_on_create_and_rename(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    s.create_environment(new_env(c.id, "build box", None), vec![])
        .await
        .unwrap();
    let err = s
        .create_environment(new_env(c.id, "build box", None), vec![])
        .await
        .unwrap_err();
    assert_eq!(
        conflict_code(&err),
        Some(ConflictCode::EnvironmentNameTaken)
    );
    assert_eq!(
        err.to_string(),
        "An environment named \"build box\" already exists in this company."
    );
    let other = s
        .create_environment(new_env(c.id, "gpu box", None), vec![])
        .await
        .unwrap();
    let err = s
        .update_environment(
            other.id,
            EnvironmentPatch {
                name: Some("build box".into()),
                ..Default::default()
            },
            vec![],
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(
        conflict_code(&err),
        Some(ConflictCode::EnvironmentNameTaken)
    );
    assert_eq!(
        s.get_environment(other.id).await.unwrap().unwrap().name,
        "gpu box"
    );
    // The same name in another company is fine.
    let c2 = company(s).await;
    s.create_environment(new_env(c2.id, "build box", None), vec![])
        .await
        .unwrap();
}

async fn failed_create_environment_writes_nothing(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    s.create_environment(new_env(c.id, "taken", None), vec![])
        .await
        .unwrap();
    let key = secret(c.id, "taken-key");
    let key_id = key.id;
    let mut n = new_env(c.id, "taken", None);
    n.config["privateKeySecretRef"] = secret_ref(key_id);
    let err = s.create_environment(n, vec![key]).await.unwrap_err();
    assert_eq!(
        conflict_code(&err),
        Some(ConflictCode::EnvironmentNameTaken)
    );
    assert!(s.get_secret(key_id).await.unwrap().is_none());
    // With a fresh name the environment and its secret land together.
    let key = secret(c.id, "fresh-key");
    let key_id = key.id;
    let mut n = new_env(c.id, "fresh", None);
    n.config["privateKeySecretRef"] = secret_ref(key_id);
    let e = s.create_environment(n, vec![key]).await.unwrap();
    assert_eq!(s.get_environment(e.id).await.unwrap().unwrap(), e);
    assert!(s.get_secret(key_id).await.unwrap().is_some());
}

async fn managed_local_cannot_be_archived_or_deleted(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let local = s.ensure_local_environment(c.id).await.unwrap();
    let err = s
        .update_environment(
            local.id,
            EnvironmentPatch {
                status: Some(EnvironmentStatus::Archived),
                ..Default::default()
            },
            vec![],
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::ManagedLocal));
    let err = s.delete_environment(local.id, true).await.unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::ManagedLocal));
    assert_eq!(
        err.to_string(),
        "Cannot delete the managed local environment."
    );
}

async fn update_environment_patches_and_rotates_secrets(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let old = secret(c.id, "key-v1");
    let old_id = old.id;
    let mut n = new_env(c.id, "rotating", Some(2));
    n.config["privateKeySecretRef"] = secret_ref(old_id);
    let e = s.create_environment(n, vec![old]).await.unwrap();
    let new = secret(c.id, "key-v2");
    let new_id = new.id;
    let mut config = e.config.clone();
    config["privateKeySecretRef"] = secret_ref(new_id);
    let updated = s
        .update_environment(
            e.id,
            EnvironmentPatch {
                description: Some(None),
                config: Some(config.clone()),
                capacity: Some(None),
                metadata: Some(Some(json!({"team": "infra"}))),
                ..Default::default()
            },
            vec![new],
            vec![old_id],
        )
        .await
        .unwrap();
    assert_eq!(updated.description, None);
    assert_eq!(updated.capacity, None);
    assert_eq!(updated.config, config);
    assert_eq!(updated.metadata, Some(json!({"team": "infra"})));
    assert_eq!(updated.name, "rotating");
    assert!(updated.updated_at >= e.updated_at);
    assert_eq!(s.get_environment(e.id).await.unwrap().unwrap(), updated);
    assert!(s.get_secret(old_id).await.unwrap().is_none());
    assert!(s.get_secret(new_id).await.unwrap().is_some());
    // A secret still referenced is not dropped.
    s.update_environment(e.id, EnvironmentPatch::default(), vec![], vec![new_id])
        .await
        .unwrap();
    assert!(s.get_secret(new_id).await.unwrap().is_some());
    let missing = s
        .update_environment(
            EnvironmentId::new(),
            EnvironmentPatch::default(),
            vec![],
            vec![],
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    // Filters.
    let archived = s
        .update_environment(
            e.id,
            EnvironmentPatch {
                status: Some(EnvironmentStatus::Archived),
                ..Default::default()
            },
            vec![],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(archived.status, EnvironmentStatus::Archived);
    let listed = s
        .list_environments(
            c.id,
            &EnvironmentFilter {
                status: Some(EnvironmentStatus::Archived),
                driver: None,
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(listed.items, vec![archived]);
}

async fn company_default_environment_must_belong_to_the_company(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let c2 = company(s).await;
    let e = env(s, c.id, None).await;
    let foreign = env(s, c2.id, None).await;
    let updated = s
        .set_company_default_environment(c.id, Some(e.id))
        .await
        .unwrap();
    assert_eq!(updated.default_environment_id, Some(e.id));
    assert_eq!(s.get_company(c.id).await.unwrap().unwrap(), updated);
    assert!(matches!(
        s.set_company_default_environment(c.id, Some(foreign.id))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.set_company_default_environment(CompanyId::new(), None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let cleared = s.set_company_default_environment(c.id, None).await.unwrap();
    assert_eq!(cleared.default_environment_id, None);
}

// ---- leases ---------------------------------------------------------------------------------

async fn lease_acquire_renew_release_checks_the_fence(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let before = Utc::now();
    let mut r = req(&e, "workspace:a", LeasePolicy::Ephemeral, None);
    r.ttl_secs = 60;
    r.provider = Some("ssh".into());
    let l = s.acquire_lease(r).await.unwrap();
    assert_eq!(l.status, LeaseStatus::Active);
    assert_eq!(l.scope_key, "workspace:a");
    assert_eq!(l.provider.as_deref(), Some("ssh"));
    assert!(l.fence > 0);
    assert_eq!(l.acquired_at, l.heartbeat_at);
    assert_eq!(l.acquired_at, l.last_used_at);
    assert_eq!(l.expires_at - l.acquired_at, TimeDelta::seconds(60));
    assert!(l.acquired_at >= before - TimeDelta::seconds(1));
    assert_eq!(s.get_lease(l.id).await.unwrap().unwrap(), l);

    assert_lost(s.renew_lease(l.id, l.fence + 1, 60).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let renewed = s.renew_lease(l.id, l.fence, 120).await.unwrap();
    assert!(renewed.expires_at > l.expires_at);
    assert!(renewed.heartbeat_at > l.heartbeat_at);
    assert_eq!(renewed.fence, l.fence);

    assert_lost(
        s.release_lease(l.id, l.fence - 1, RunOutcome::Succeeded, None)
            .await,
    );
    let released = s
        .release_lease(
            l.id,
            l.fence,
            RunOutcome::Succeeded,
            Some(CleanupStatus::Success),
        )
        .await
        .unwrap();
    assert_eq!(released.status, LeaseStatus::Released);
    assert_eq!(released.cleanup_status, Some(CleanupStatus::Success));
    assert!(released.released_at.is_some());
    assert_lost(s.renew_lease(l.id, l.fence, 60).await);
    assert_lost(
        s.release_lease(l.id, l.fence, RunOutcome::Succeeded, None)
            .await,
    );
    assert_lost(s.renew_lease(LeaseId::new(), 1, 60).await);

    let again = s
        .acquire_lease(req(&e, "workspace:a", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    assert!(again.fence > l.fence);
    // Another company's request for this environment finds nothing.
    let mut foreign = req(&e, "workspace:b", LeasePolicy::Ephemeral, None);
    foreign.company_id = CompanyId::new();
    assert!(matches!(
        s.acquire_lease(foreign).await,
        Err(StoreError::NotFound { .. })
    ));
    let mut bad = req(&e, "workspace:c", LeasePolicy::Ephemeral, None);
    bad.ttl_secs = 0;
    assert!(matches!(
        s.acquire_lease(bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn renew_after_expiry_is_lost(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let mut r = req(&e, "workspace:short", LeasePolicy::Ephemeral, None);
    r.ttl_secs = 1;
    let l = s.acquire_lease(r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match s.renew_lease(l.id, l.fence, 60).await {
        Err(StoreError::LeaseLost { lease_id, reason }) => {
            assert_eq!(lease_id, l.id);
            assert!(reason.contains("expired"), "{reason}");
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

async fn expire_due_leases_expires_overdue_leases_and_queues_cleanup(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let short = s
        .acquire_lease(AcquireLease {
            ttl_secs: 30,
            ..req(&e, "workspace:1", LeasePolicy::Ephemeral, None)
        })
        .await
        .unwrap();
    let long = s
        .acquire_lease(AcquireLease {
            ttl_secs: 3600,
            ..req(&e, "workspace:2", LeasePolicy::Ephemeral, None)
        })
        .await
        .unwrap();
    let expired = s
        .expire_due_leases(Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![short.id]
    );
    let x = &expired[0];
    assert_eq!(x.status, LeaseStatus::Expired);
    assert_eq!(x.failure_reason.as_deref(), Some("expired"));
    assert_eq!(x.cleanup_status, Some(CleanupStatus::Pending));
    assert_lost(s.renew_lease(short.id, short.fence, 60).await);
    assert_lost(
        s.release_lease(short.id, short.fence, RunOutcome::Failed, None)
            .await,
    );
    assert_eq!(
        s.get_lease(long.id).await.unwrap().unwrap().status,
        LeaseStatus::Active
    );
    let cleanup = s
        .leases_needing_cleanup(Utc::now() - TimeDelta::days(1), 10)
        .await
        .unwrap();
    assert_eq!(
        cleanup.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![short.id]
    );
    // The reaper's cleanup outcome.
    let parked = s
        .transition_lease(short.id, LeaseEvent::CleanupFailed, None)
        .await
        .unwrap();
    assert_eq!(parked.status, LeaseStatus::PendingCleanup);
    assert_eq!(parked.cleanup_status, Some(CleanupStatus::Failed));
    assert_eq!(
        s.leases_needing_cleanup(Utc::now(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let done = s
        .transition_lease(short.id, LeaseEvent::CleanupSucceeded, None)
        .await
        .unwrap();
    assert_eq!(done.status, LeaseStatus::Expired);
    assert_eq!(done.cleanup_status, Some(CleanupStatus::Success));
    assert!(
        s.leases_needing_cleanup(Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn overdue_active_lease_does_not_block_its_scope(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, Some(1)).await;
    let old = s
        .acquire_lease(AcquireLease {
            ttl_secs: 1,
            ..req(&e, "workspace:x", LeasePolicy::Ephemeral, None)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Neither single flight nor capacity counts a lease past its expiry.
    let new = s
        .acquire_lease(req(&e, "workspace:y", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    assert!(new.fence > old.fence);
    let old = s.get_lease(old.id).await.unwrap().unwrap();
    assert_eq!(old.status, LeaseStatus::Expired);
    assert_eq!(old.cleanup_status, Some(CleanupStatus::Pending));
}

async fn illegal_transitions_are_refused(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let l = s
        .acquire_lease(req(
            &e,
            "workspace:t",
            LeasePolicy::ReuseByEnvironment,
            None,
        ))
        .await
        .unwrap();
    for event in [
        LeaseEvent::Resume,
        LeaseEvent::Destroy,
        LeaseEvent::CleanupFailed,
        LeaseEvent::CleanupSucceeded,
    ] {
        let err = s.transition_lease(l.id, event, None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::IllegalTransition(t) if t.from == LeaseStatus::Active),
            "{event:?}: {err:?}"
        );
    }
    assert!(matches!(
        s.transition_lease(l.id, LeaseEvent::Release(RunOutcome::Succeeded), None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let retained = s
        .release_lease(l.id, l.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(retained.status, LeaseStatus::Retained);
    assert_eq!(retained.released_at, None);
    let err = s
        .transition_lease(l.id, LeaseEvent::Expire, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition(_)));
    let destroyed = s
        .transition_lease(l.id, LeaseEvent::Destroy, None)
        .await
        .unwrap();
    assert_eq!(destroyed.status, LeaseStatus::Expired);
    assert_eq!(
        destroyed.failure_reason.as_deref(),
        Some("retention_elapsed")
    );
    assert_eq!(destroyed.cleanup_status, Some(CleanupStatus::Pending));
    assert!(matches!(
        s.transition_lease(l.id, LeaseEvent::Destroy, None).await,
        Err(StoreError::IllegalTransition(_))
    ));
    assert!(matches!(
        s.transition_lease(LeaseId::new(), LeaseEvent::Expire, None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // Expire through the transition path, as the reaper does for a single lease.
    let l2 = s
        .acquire_lease(req(&e, "workspace:u", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let x = s
        .transition_lease(l2.id, LeaseEvent::Expire, None)
        .await
        .unwrap();
    assert_eq!(x.status, LeaseStatus::Expired);
    assert_eq!(x.failure_reason.as_deref(), Some("expired"));
    assert_lost(s.renew_lease(l2.id, l2.fence, 10).await);
}

async fn fences_increase_strictly_across_environments(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e1 = env(s, c.id, None).await;
    let e2 = env(s, c.id, None).await;
    let mut last = 0;
    for i in 0..10 {
        let e = if i % 2 == 0 { &e1 } else { &e2 };
        let l = s
            .acquire_lease(req(e, &format!("run:{i}"), LeasePolicy::Ephemeral, None))
            .await
            .unwrap();
        assert!(l.fence > last, "fence {} after {last}", l.fence);
        last = l.fence;
    }
}

async fn single_flight_64_acquirers_without_waiting_exactly_one_wins(fx: &Fx) {
    let c = company(&*fx.store).await;
    let e = env(&*fx.store, c.id, None).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = fx.store.clone();
            let r = req(&e, "workspace:hot", LeasePolicy::Ephemeral, None);
            tokio::spawn(async move { s.acquire_lease(r).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(err) => {
                assert_eq!(
                    conflict_code(&err),
                    Some(ConflictCode::LeaseConflict),
                    "{err:?}"
                );
                assert_eq!(
                    err.to_string(),
                    "Environment lease conflict: another run holds this workspace on the \
                     environment."
                );
            }
        }
    }
    assert_eq!(won, 1);
    let active = fx
        .store
        .list_leases(e.id, Some(LeaseStatus::Active), &Page::all())
        .await
        .unwrap();
    assert_eq!(active.items.len(), 1);
}

async fn single_flight_64_waiters_are_served_one_after_another(fx: &Fx) {
    let c = company(&*fx.store).await;
    let e = env(&*fx.store, c.id, None).await;
    let holders = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = fx.store.clone();
            let holders = holders.clone();
            let r = req(
                &e,
                "workspace:hot",
                LeasePolicy::Ephemeral,
                Some(Duration::from_secs(120)),
            );
            tokio::spawn(async move {
                let l = s.acquire_lease(r).await.unwrap();
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                s.release_lease(l.id, l.fence, RunOutcome::Succeeded, None)
                    .await
                    .unwrap();
                l.fence
            })
        })
        .collect();
    let mut fences = HashSet::new();
    for t in tasks {
        fences.insert(t.await.unwrap());
    }
    assert_eq!(fences.len(), 64);
    let all = fx
        .store
        .list_leases(e.id, None, &Page::all())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 64);
    assert!(all.items.iter().all(|l| l.status == LeaseStatus::Released));
}

/// The reaper expired the lease of a run whose instance died; the run is still `running` (its
/// agent still on the host) until another instance adopts it. Meanwhile the slot stays taken:
/// otherwise a waiting acquirer takes it and the adoption exceeds the capacity.
async fn a_lease_awaiting_adoption_keeps_its_capacity_slot(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let a = agent(s, c.id).await;
    let e = env(s, c.id, Some(1)).await;
    new_run(s, c.id, a.id).await;
    let run = s.claim_next_run("dead").await.unwrap().unwrap();
    let held = s
        .acquire_lease(AcquireLease {
            ttl_secs: 30,
            run_id: Some(run.id),
            ..req(&e, "run:orphan", LeasePolicy::Ephemeral, None)
        })
        .await
        .unwrap();
    let expired = s
        .expire_due_leases(Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    assert_eq!(
        expired.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![held.id]
    );
    let err = s
        .acquire_lease(req(&e, "run:other", LeasePolicy::Ephemeral, None))
        .await
        .unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::LeaseConflict));
    // Once the run is over (failed after the grace, or finished by its adopter), the
    // slot is free.
    s.update_run(
        run.id,
        RunPatch {
            status: Some(RunStatus::Failed),
            ..RunPatch::default()
        },
    )
    .await
    .unwrap();
    s.acquire_lease(req(&e, "run:other", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
}

async fn capacity_waiters_are_woken_in_fifo_order(fx: &Fx) {
    let c = company(&*fx.store).await;
    let e = env(&*fx.store, c.id, Some(2)).await;
    let s = fx.store.clone();
    let mut held = vec![
        s.acquire_lease(req(&e, "run:a", LeasePolicy::Ephemeral, None))
            .await
            .unwrap(),
        s.acquire_lease(req(&e, "run:b", LeasePolicy::Ephemeral, None))
            .await
            .unwrap(),
    ];
    let err = s
        .acquire_lease(req(&e, "run:c", LeasePolicy::Ephemeral, None))
        .await
        .unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::LeaseConflict));
    assert_eq!(
        err.to_string(),
        "Environment lease conflict: the environment is at capacity."
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5 {
        let s = s.clone();
        let tx = tx.clone();
        let r = req(
            &e,
            &format!("run:w{i}"),
            LeasePolicy::Ephemeral,
            Some(Duration::from_secs(60)),
        );
        tokio::spawn(async move {
            let l = s.acquire_lease(r).await.unwrap();
            tx.send((i, l)).unwrap();
        });
        // Let each waiter queue up before the next one arrives.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for expected in 0..5 {
        let l = held.remove(0);
        s.release_lease(l.id, l.fence, RunOutcome::Succeeded, None)
            .await
            .unwrap();
        let (i, granted) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a waiter is woken")
            .unwrap();
        assert_eq!(i, expected, "waiters are served in arrival order");
        // Exactly one slot was freed: nobody else gets in.
        assert!(
            tokio::time::timeout(Duration::from_millis(150), rx.recv())
                .await
                .is_err()
        );
        held.push(granted);
        let active = s
            .list_leases(e.id, Some(LeaseStatus::Active), &Page::all())
            .await
            .unwrap();
        assert_eq!(active.items.len(), 2);
    }
}

async fn bounded_wait_times_out(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    s.acquire_lease(req(&e, "workspace:busy", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let started = Instant::now();
    let err = s
        .acquire_lease(req(
            &e,
            "workspace:busy",
            LeasePolicy::Ephemeral,
            Some(Duration::from_millis(300)),
        ))
        .await
        .unwrap_err();
    match err {
        StoreError::LeaseWaitTimeout {
            environment,
            waited_ms,
        } => {
            assert_eq!(environment, e.id.to_string());
            assert!(waited_ms >= 300);
        }
        other => panic!("expected LeaseWaitTimeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn release_by_outcome_follows_the_policy_table(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let outcomes = [
        RunOutcome::Succeeded,
        RunOutcome::Failed,
        RunOutcome::TimedOut,
        RunOutcome::Cancelled,
    ];
    for policy in LeasePolicy::ALL {
        for outcome in outcomes {
            let l = s
                .acquire_lease(req(&e, &format!("{policy}:{outcome:?}"), *policy, None))
                .await
                .unwrap();
            assert_eq!(l.lease_policy, *policy);
            let r = s
                .release_lease(l.id, l.fence, outcome, Some(CleanupStatus::Pending))
                .await
                .unwrap();
            let want = release_target(*policy, outcome);
            assert_eq!(r.status, want.to, "{policy} {outcome:?}");
            assert_eq!(r.failure_reason.as_deref(), want.failure_reason);
            assert_eq!(
                r.released_at.is_none(),
                want.to == LeaseStatus::Retained,
                "{policy} {outcome:?}"
            );
            assert_eq!(r.cleanup_status, Some(CleanupStatus::Pending));
        }
    }
}

async fn retained_lease_is_resumed_by_the_next_acquirer_of_its_scope(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let policy = LeasePolicy::ReuseByExecutionWorkspace;
    let first = s
        .acquire_lease(AcquireLease {
            provider_lease_id: Some("remote-42".into()),
            metadata: Some(json!({"remoteCwd": "/srv/berth/.berth/ws/w1"})),
            ..req(&e, "workspace:w1", policy, None)
        })
        .await
        .unwrap();
    let kept = s
        .release_lease(first.id, first.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(kept.status, LeaseStatus::Retained);
    // Retained leases past the cut-off are the reaper's to destroy.
    let due = s
        .leases_needing_cleanup(Utc::now() + TimeDelta::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|l| l.id).collect::<Vec<_>>(), vec![first.id]);
    assert!(
        s.leases_needing_cleanup(Utc::now() - TimeDelta::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Another scope does not resume it.
    let other = s
        .acquire_lease(req(&e, "workspace:w2", policy, None))
        .await
        .unwrap();
    assert_eq!(other.resumed_from_lease_id, None);
    let second = s
        .acquire_lease(req(&e, "workspace:w1", policy, None))
        .await
        .unwrap();
    assert_eq!(second.resumed_from_lease_id, Some(first.id));
    assert_eq!(second.provider_lease_id.as_deref(), Some("remote-42"));
    assert_eq!(
        second.metadata,
        Some(json!({"remoteCwd": "/srv/berth/.berth/ws/w1"}))
    );
    assert!(second.fence > first.fence);
    let old = s.get_lease(first.id).await.unwrap().unwrap();
    assert_eq!(old.status, LeaseStatus::Released);
    assert!(old.released_at.is_some());
    // A request's own values win over inherited ones.
    s.release_lease(second.id, second.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    let third = s
        .acquire_lease(AcquireLease {
            provider_lease_id: Some("remote-43".into()),
            ..req(&e, "workspace:w1", policy, None)
        })
        .await
        .unwrap();
    assert_eq!(third.resumed_from_lease_id, Some(second.id));
    assert_eq!(third.provider_lease_id.as_deref(), Some("remote-43"));
}

async fn lease_metadata_and_listing(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let a = s
        .acquire_lease(req(&e, "run:1", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let b = s
        .acquire_lease(req(&e, "run:2", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let m = s
        .set_lease_metadata(a.id, a.fence, json!({"pid": 42}))
        .await
        .unwrap();
    assert_eq!(m.metadata, Some(json!({"pid": 42})));
    assert_lost(s.set_lease_metadata(a.id, a.fence + 100, json!({})).await);
    s.release_lease(b.id, b.fence, RunOutcome::Cancelled, None)
        .await
        .unwrap();
    let active = s
        .list_leases(e.id, Some(LeaseStatus::Active), &Page::all())
        .await
        .unwrap();
    assert_eq!(active.items, vec![m]);
    let released = s
        .list_leases(e.id, Some(LeaseStatus::Released), &Page::all())
        .await
        .unwrap();
    assert_eq!(released.items.len(), 1);
    assert_eq!(
        released.items[0].failure_reason.as_deref(),
        Some("cancelled")
    );
    let first = s.list_leases(e.id, None, &Page::first(1)).await.unwrap();
    assert_eq!(first.items[0].id, a.id);
    let rest = s
        .list_leases(
            e.id,
            None,
            &Page {
                limit: 1,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items[0].id, b.id);
    assert_eq!(rest.next_cursor, None);
}

// ---- deleting environments ------------------------------------------------------------------

async fn delete_environment_refuses_local_default_and_active_leases(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let d = env(s, c.id, None).await;
    s.set_company_default_environment(c.id, Some(d.id))
        .await
        .unwrap();
    let err = s.delete_environment(d.id, true).await.unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::CompanyDefault));
    assert_eq!(
        err.to_string(),
        "Cannot delete the company's default environment."
    );
    s.acquire_lease(req(&e, "run:1", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    s.acquire_lease(req(&e, "run:2", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    match s.delete_environment(e.id, false).await.unwrap_err() {
        StoreError::Conflict {
            code,
            message,
            details,
        } => {
            assert_eq!(code, ConflictCode::ActiveLeases);
            assert_eq!(
                message,
                "Environment has active leases; release them or delete with force=true."
            );
            assert_eq!(details, json!({"activeLeaseCount": 2}));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.get_environment(e.id).await.unwrap().is_some());
    assert!(matches!(
        s.delete_environment(EnvironmentId::new(), false).await,
        Err(StoreError::NotFound { .. })
    ));
    // Without leases a plain delete works.
    let plain = env(s, c.id, None).await;
    assert_eq!(
        s.delete_environment(plain.id, false).await.unwrap().id,
        plain.id
    );
    assert!(s.get_environment(plain.id).await.unwrap().is_none());
}

async fn force_delete_environment_clears_every_reference(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let own = secret(c.id, "own-key");
    let shared = secret(c.id, "shared-key");
    let (own_id, shared_id) = (own.id, shared.id);
    let mut n = new_env(c.id, "doomed", None);
    n.config["privateKeySecretRef"] = secret_ref(own_id);
    n.config["privateKeyPassphraseSecretRef"] = secret_ref(shared_id);
    let e = s.create_environment(n, vec![own, shared]).await.unwrap();
    let mut n2 = new_env(c.id, "survivor", None);
    n2.config["privateKeySecretRef"] = secret_ref(shared_id);
    let survivor = s.create_environment(n2, vec![]).await.unwrap();

    let sel = json!({"environmentId": e.id, "mode": "isolated"});
    let other_sel = json!({"environmentId": survivor.id});
    let p = s
        .create_project(NewProject {
            company_id: c.id,
            name: "p".into(),
            execution_workspace_policy: sel.clone(),
        })
        .await
        .unwrap();
    let w = s
        .create_execution_workspace(NewExecutionWorkspace {
            company_id: c.id,
            project_id: Some(p.id),
            local_path: "/tmp/w".into(),
            config: sel.clone(),
        })
        .await
        .unwrap();
    let i = s
        .create_issue(NewIssue {
            company_id: c.id,
            project_id: Some(p.id),
            title: "fix".into(),
            assignee_agent_id: None,
            execution_workspace_id: Some(w.id),
            execution_workspace_settings: sel.clone(),
        })
        .await
        .unwrap();
    let untouched = s
        .create_issue(NewIssue {
            company_id: c.id,
            project_id: None,
            title: "other".into(),
            assignee_agent_id: None,
            execution_workspace_id: None,
            execution_workspace_settings: other_sel.clone(),
        })
        .await
        .unwrap();
    let a = s
        .create_agent(NewAgent {
            company_id: c.id,
            name: "a".into(),
            adapter_type: "process".into(),
            adapter_config: json!({}),
            default_environment_id: Some(e.id),
            grants: vec![],
        })
        .await
        .unwrap();
    let l = s
        .acquire_lease(req(&e, "run:x", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();

    let deleted = s.delete_environment(e.id, true).await.unwrap();
    assert_eq!(deleted.id, e.id);
    assert!(s.get_environment(e.id).await.unwrap().is_none());
    assert_lost(s.renew_lease(l.id, l.fence, 60).await);
    let cleared = json!({"environmentId": null, "mode": "isolated"});
    assert_eq!(
        s.get_project(p.id)
            .await
            .unwrap()
            .unwrap()
            .execution_workspace_policy,
        cleared
    );
    assert_eq!(
        s.get_execution_workspace(w.id)
            .await
            .unwrap()
            .unwrap()
            .config,
        cleared
    );
    assert_eq!(
        s.get_issue(i.id)
            .await
            .unwrap()
            .unwrap()
            .execution_workspace_settings,
        cleared
    );
    assert_eq!(
        s.get_issue(untouched.id)
            .await
            .unwrap()
            .unwrap()
            .execution_workspace_settings,
        other_sel
    );
    assert_eq!(
        s.get_agent(a.id)
            .await
            .unwrap()
            .unwrap()
            .default_environment_id,
        None
    );
    assert!(s.get_secret(own_id).await.unwrap().is_none());
    assert!(s.get_secret(shared_id).await.unwrap().is_some());
}

async fn environment_references_count_every_selection(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let sel = json!({"environmentId": e.id});
    for _ in 0..2 {
        s.create_issue(NewIssue {
            company_id: c.id,
            project_id: None,
            title: "t".into(),
            assignee_agent_id: None,
            execution_workspace_id: None,
            execution_workspace_settings: sel.clone(),
        })
        .await
        .unwrap();
    }
    s.create_project(NewProject {
        company_id: c.id,
        name: "p".into(),
        execution_workspace_policy: sel.clone(),
    })
    .await
    .unwrap();
    s.create_execution_workspace(NewExecutionWorkspace {
        company_id: c.id,
        project_id: None,
        local_path: "/tmp/x".into(),
        config: sel.clone(),
    })
    .await
    .unwrap();
    s.create_agent(NewAgent {
        company_id: c.id,
        name: "a".into(),
        adapter_type: "process".into(),
        adapter_config: json!({}),
        default_environment_id: Some(e.id),
        grants: vec!["x".into()],
    })
    .await
    .unwrap();
    s.acquire_lease(req(&e, "run:1", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    s.set_company_default_environment(c.id, Some(e.id))
        .await
        .unwrap();
    let refs = s.environment_references(e.id).await.unwrap();
    assert_eq!(
        refs,
        EnvironmentReferences {
            is_managed_local: false,
            is_company_default: true,
            agent_default_count: 1,
            execution_workspace_selection_count: 1,
            issue_selection_count: 2,
            project_selection_count: 1,
            active_lease_count: 1,
        }
    );
    let local = s.ensure_local_environment(c.id).await.unwrap();
    let refs = s.environment_references(local.id).await.unwrap();
    assert!(refs.is_managed_local);
    assert_eq!(refs.issue_selection_count, 0);
}

// ---- the other records ----------------------------------------------------------------------

async fn secrets_crud_and_unique_names(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let new = NewSecret {
        description: Some("deploy key".into()),
        ..secret(c.id, "deploy")
    };
    let meta = s.create_secret(new.clone()).await.unwrap();
    assert_eq!(meta.name, "deploy");
    assert_eq!(meta.version, 1);
    assert_eq!(meta.description.as_deref(), Some("deploy key"));
    let rec = s.get_secret(new.id).await.unwrap().unwrap();
    assert_eq!(rec.meta, meta);
    assert_eq!(rec.ciphertext, new.ciphertext);
    assert_eq!(rec.nonce, new.nonce);
    let err = s.create_secret(secret(c.id, "deploy")).await.unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::SecretNameTaken));
    let listed = s.list_secrets(c.id, &Page::default()).await.unwrap();
    assert_eq!(listed.items, vec![meta]);
    assert!(s.delete_secret(new.id).await.unwrap());
    assert!(!s.delete_secret(new.id).await.unwrap());
    assert!(s.get_secret(new.id).await.unwrap().is_none());
}

async fn agents_crud_and_in_use_refusal(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let a = s
        .create_agent(NewAgent {
            company_id: c.id,
            name: "coder".into(),
            adapter_type: "codex_local".into(),
            adapter_config: json!({"model": "o3", "env": {"A": "1"}}),
            default_environment_id: Some(e.id),
            grants: vec!["environments:manage".into()],
        })
        .await
        .unwrap();
    assert_eq!(s.get_agent(a.id).await.unwrap().unwrap(), a);
    let u = s
        .update_agent(
            a.id,
            AgentPatch {
                name: Some("reviewer".into()),
                default_environment_id: Some(None),
                grants: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.name, "reviewer");
    assert_eq!(u.default_environment_id, None);
    assert!(u.grants.is_empty());
    assert_eq!(u.adapter_config, a.adapter_config);
    assert_eq!(s.get_agent(a.id).await.unwrap().unwrap(), u);
    assert_eq!(
        s.list_agents(c.id, &Page::default()).await.unwrap().items,
        vec![u]
    );
    assert!(matches!(
        s.update_agent(AgentId::new(), AgentPatch::default()).await,
        Err(StoreError::NotFound { .. })
    ));
    // An agent with runs stays.
    new_run(s, c.id, a.id).await;
    let err = s.delete_agent(a.id).await.unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::InUse), "{err:?}");
    let b = agent(s, c.id).await;
    assert!(s.delete_agent(b.id).await.unwrap());
    assert!(!s.delete_agent(b.id).await.unwrap());
}

async fn projects_issues_and_workspaces_crud(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let p = s
        .create_project(NewProject {
            company_id: c.id,
            name: "site".into(),
            execution_workspace_policy: json!({}),
        })
        .await
        .unwrap();
    assert_eq!(s.get_project(p.id).await.unwrap().unwrap(), p);
    let p2 = s
        .update_project(
            p.id,
            ProjectPatch {
                name: Some("website".into()),
                execution_workspace_policy: Some(json!({"environmentId": null})),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.list_projects(c.id, &Page::default()).await.unwrap().items,
        vec![p2]
    );

    let w = s
        .create_execution_workspace(NewExecutionWorkspace {
            company_id: c.id,
            project_id: Some(p.id),
            local_path: "/home/dev/site".into(),
            config: json!({}),
        })
        .await
        .unwrap();
    assert_eq!(s.get_execution_workspace(w.id).await.unwrap().unwrap(), w);
    let w2 = s
        .update_execution_workspace(
            w.id,
            ExecutionWorkspacePatch {
                project_id: Some(None),
                local_path: Some("/home/dev/site2".into()),
                config: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(w2.project_id, None);
    assert_eq!(w2.local_path, "/home/dev/site2");
    assert_eq!(
        s.list_execution_workspaces(c.id, &Page::default())
            .await
            .unwrap()
            .items,
        vec![w2.clone()]
    );

    let a = agent(s, c.id).await;
    let i = s
        .create_issue(NewIssue {
            company_id: c.id,
            project_id: Some(p.id),
            title: "broken link".into(),
            assignee_agent_id: Some(a.id),
            execution_workspace_id: Some(w.id),
            execution_workspace_settings: json!({}),
        })
        .await
        .unwrap();
    assert_eq!(s.get_issue(i.id).await.unwrap().unwrap(), i);
    let i2 = s
        .update_issue(
            i.id,
            IssuePatch {
                title: Some("fix broken link".into()),
                assignee_agent_id: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(i2.assignee_agent_id, None);
    assert_eq!(i2.project_id, Some(p.id));
    assert_eq!(
        s.list_issues(c.id, &Page::default()).await.unwrap().items,
        vec![i2]
    );
    // Deleting the workspace and project unlinks them from the issue.
    assert!(s.delete_execution_workspace(w.id).await.unwrap());
    assert!(s.delete_project(p.id).await.unwrap());
    let i3 = s.get_issue(i.id).await.unwrap().unwrap();
    assert_eq!((i3.project_id, i3.execution_workspace_id), (None, None));
    assert!(s.delete_issue(i.id).await.unwrap());
    assert!(!s.delete_issue(i.id).await.unwrap());
    assert!(!s.delete_project(p.id).await.unwrap());
    assert!(!s.delete_execution_workspace(w.id).await.unwrap());
    // A reference to a row that does not exist is refused.
    let bad = s
        .create_issue(NewIssue {
            company_id: c.id,
            project_id: Some(ProjectId::new()),
            title: "x".into(),
            assignee_agent_id: None,
            execution_workspace_id: None,
            execution_workspace_settings: json!({}),
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))));
}

async fn pagination_follows_cursors(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(agent(s, c.id).await.id);
    }
    let mut seen = Vec::new();
    let mut page = Page::first(2);
    let mut pages = 0;
    loop {
        let got = s.list_agents(c.id, &page).await.unwrap();
        pages += 1;
        assert!(got.items.len() <= 2);
        seen.extend(got.items.iter().map(|a| a.id));
        match got.next_cursor {
            Some(cur) => page.cursor = Some(cur),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    let exact = s.list_agents(c.id, &Page::first(5)).await.unwrap();
    assert_eq!(exact.items.len(), 5);
    assert_eq!(exact.next_cursor, None);
    assert!(matches!(
        s.list_agents(
            c.id,
            &Page {
                limit: 2,
                cursor: Some("not-a-uuid".into())
            }
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    // Companies and tokens page the same way.
    company(s).await;
    let first = s.list_companies(&Page::first(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert!(first.next_cursor.is_some());
}

async fn runs_lifecycle_and_terminal_status_is_final(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let a = agent(s, c.id).await;
    let e = env(s, c.id, None).await;
    let r = new_run(s, c.id, a.id).await;
    assert_eq!(r.status, RunStatus::Queued);
    assert_eq!(s.get_run(r.id).await.unwrap().unwrap(), r);
    let l = s
        .acquire_lease(req(&e, "run:r", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let started = Utc::now();
    let running = s
        .update_run(
            r.id,
            RunPatch {
                status: Some(RunStatus::Running),
                environment_id: Some(Some(e.id)),
                environment_source: Some(Some(EnvironmentSource::Agent)),
                lease_id: Some(Some(l.id)),
                started_at: Some(Some(started)),
                session_params: Some(Some(json!({"sessionId": "s1"}))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.environment_source, Some(EnvironmentSource::Agent));
    assert_eq!(running.lease_id, Some(l.id));
    assert_eq!(s.get_run(r.id).await.unwrap().unwrap(), running);
    let done = s
        .update_run(
            r.id,
            RunPatch {
                status: Some(RunStatus::Succeeded),
                exit_code: Some(Some(0)),
                result: Some(Some(json!({"ok": true}))),
                finished_at: Some(Some(Utc::now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(s.get_run(r.id).await.unwrap().unwrap(), done);
    let err = s
        .update_run(
            r.id,
            RunPatch {
                status: Some(RunStatus::Failed),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::IllegalRunTransition {
            from: RunStatus::Succeeded,
            to: RunStatus::Failed
        }
    ));
    // Non-status fields of a finished run may still be annotated.
    let noted = s
        .update_run(
            r.id,
            RunPatch {
                error_message: Some(Some("restored with conflicts".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(noted.status, RunStatus::Succeeded);
    let queued = new_run(s, c.id, a.id).await;
    let listed = s
        .list_runs(c.id, Some(RunStatus::Queued), &Page::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![queued]);
    assert_eq!(
        s.list_runs(c.id, None, &Page::all())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert!(matches!(
        s.update_run(RunId::new(), RunPatch::default()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn claim_next_run_never_double_claims(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let mut made = Vec::new();
    for _ in 0..24 {
        made.push(new_run(&*fx.store, c.id, a.id).await.id);
    }
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = fx.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(r) = s.claim_next_run(&format!("worker-{i}")).await.unwrap() {
                    assert_eq!(r.status, RunStatus::Running);
                    assert_eq!(
                        r.claimed_by.as_deref(),
                        Some(format!("worker-{i}").as_str())
                    );
                    assert!(r.started_at.is_some());
                    mine.push(r.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 24, "every run claimed exactly once");
    assert_eq!(unique.len(), 24);
    assert!(fx.store.claim_next_run("late").await.unwrap().is_none());
    // Oldest first.
    let r1 = new_run(&*fx.store, c.id, a.id).await;
    let r2 = new_run(&*fx.store, c.id, a.id).await;
    assert_eq!(
        fx.store.claim_next_run("w").await.unwrap().unwrap().id,
        r1.id
    );
    assert_eq!(
        fx.store.claim_next_run("w").await.unwrap().unwrap().id,
        r2.id
    );
}

async fn cancel_requests_reach_the_claiming_instance_only(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let r = new_run(&*fx.store, c.id, a.id).await;
    let claimed = fx
        .store
        .claim_next_run("instance-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, r.id);
    assert!(
        fx.store
            .cancel_requested_runs("instance-a")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(fx.store.request_run_cancel(r.id).await.unwrap());
    // Asking twice is harmless.
    assert!(fx.store.request_run_cancel(r.id).await.unwrap());
    assert_eq!(
        fx.store.cancel_requested_runs("instance-a").await.unwrap(),
        vec![r.id]
    );
    assert!(
        fx.store
            .cancel_requested_runs("instance-b")
            .await
            .unwrap()
            .is_empty()
    );
    // Once the run ended, it is no longer asked for and a new request is refused.
    fx.store
        .update_run(
            r.id,
            RunPatch {
                status: Some(RunStatus::Cancelled),
                ..RunPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(
        fx.store
            .cancel_requested_runs("instance-a")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!fx.store.request_run_cancel(r.id).await.unwrap());
}

async fn runs_of_a_gone_executor_are_failed(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let old = new_run(&*fx.store, c.id, a.id).await;
    fx.store
        .claim_next_run("before-restart")
        .await
        .unwrap()
        .unwrap();
    let mine = new_run(&*fx.store, c.id, a.id).await;
    fx.store.claim_next_run("me").await.unwrap().unwrap();
    let queued = new_run(&*fx.store, c.id, a.id).await;
    let failed = fx
        .store
        .fail_runs_not_claimed_by("me", "lease_lost", "the executor stopped")
        .await
        .unwrap();
    assert_eq!(failed, vec![old.id]);
    let old = fx.store.get_run(old.id).await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Failed);
    assert_eq!(old.error_code.as_deref(), Some("lease_lost"));
    assert!(old.finished_at.is_some());
    let status = |id| {
        let s = fx.store.clone();
        async move { s.get_run(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(mine.id).await, RunStatus::Running);
    assert_eq!(status(queued.id).await, RunStatus::Queued);
}

async fn runs_on_leases_expired_past_the_grace_are_failed(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let a = agent(s, c.id).await;
    let e = env(s, c.id, None).await;
    let mut leased = Vec::new();
    for (scope, ttl) in [("workspace:orphan", 30), ("workspace:alive", 3600)] {
        let r = new_run(s, c.id, a.id).await;
        assert_eq!(s.claim_next_run("w").await.unwrap().unwrap().id, r.id);
        let l = s
            .acquire_lease(AcquireLease {
                ttl_secs: ttl,
                run_id: Some(r.id),
                ..req(&e, scope, LeasePolicy::Ephemeral, None)
            })
            .await
            .unwrap();
        s.update_run(
            r.id,
            RunPatch {
                lease_id: Some(Some(l.id)),
                ..RunPatch::default()
            },
        )
        .await
        .unwrap();
        leased.push(r.id);
    }
    let expired = s
        .expire_due_leases(Utc::now() + chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    // Just expired: a live executor may still be ending the run itself.
    let early = s
        .fail_runs_of_expired_leases(
            Utc::now() - chrono::Duration::seconds(300),
            "lease_lost",
            "x",
        )
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:?}");
    let late = s
        .fail_runs_of_expired_leases(
            Utc::now() + chrono::Duration::seconds(1),
            "lease_lost",
            "gone",
        )
        .await
        .unwrap();
    assert_eq!(late, vec![leased[0]]);
    let orphan = s.get_run(leased[0]).await.unwrap().unwrap();
    assert_eq!(orphan.status, RunStatus::Failed);
    assert_eq!(orphan.error_code.as_deref(), Some("lease_lost"));
    assert_eq!(orphan.error_message.as_deref(), Some("gone"));
    let alive = s.get_run(leased[1]).await.unwrap().unwrap();
    assert_eq!(alive.status, RunStatus::Running);
}

async fn append_run_event_numbers_events_without_gaps_under_concurrency(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let r = new_run(&*fx.store, c.id, a.id).await;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = fx.store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    s.append_run_event(r.id, "stdout", json!({"task": t, "i": i}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = fx.store.list_run_events(r.id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=80).collect::<Vec<_>>()
    );
    // Each task's own events are in its order.
    for t in 0..8 {
        let mine: Vec<i64> = all
            .iter()
            .filter(|e| e.payload["task"] == t)
            .map(|e| e.payload["i"].as_i64().unwrap())
            .collect();
        assert_eq!(mine, (0..10).collect::<Vec<_>>());
    }
    let page = fx.store.list_run_events(r.id, 70, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![71, 72, 73, 74, 75]
    );
    assert_eq!(page[0].stream, "stdout");
    assert!(matches!(
        fx.store
            .append_run_event(RunId::new(), "stdout", json!({}))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn tokens_are_found_by_hash_and_revoked(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let t = ApiToken {
        id: TokenId::new(),
        name: "ci".into(),
        prefix: "brth_abc".into(),
        kind: TokenKind::Board,
        company_ids: vec![c.id],
        agent_id: None,
        grants: vec!["environments:manage".into()],
        instance_admin: true,
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    let stored = s.create_token(t.clone(), "ab12").await.unwrap();
    assert_eq!(stored.id, t.id);
    assert_eq!(s.count_active_tokens().await.unwrap(), 1);
    let found = s.find_token_by_hash("ab12").await.unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(found.company_ids, vec![c.id]);
    assert!(found.instance_admin);
    assert!(found.last_used_at.is_some());
    assert!(s.find_token_by_hash("ffff").await.unwrap().is_none());
    assert_eq!(
        s.list_tokens(&Page::default()).await.unwrap().items,
        vec![found]
    );
    assert!(s.revoke_token(t.id).await.unwrap());
    assert!(!s.revoke_token(t.id).await.unwrap());
    assert!(s.find_token_by_hash("ab12").await.unwrap().is_none());
    assert_eq!(s.count_active_tokens().await.unwrap(), 0);
}

async fn experimental_settings_round_trip(fx: &Fx) {
    let s = &*fx.store;
    assert_eq!(
        s.get_experimental_settings().await.unwrap(),
        ExperimentalSettings::default()
    );
    let on = ExperimentalSettings {
        enable_environments: true,
        ..ExperimentalSettings::default()
    };
    assert_eq!(s.set_experimental_settings(&on).await.unwrap(), on);
    assert_eq!(s.get_experimental_settings().await.unwrap(), on);
}

async fn activity_is_logged_and_listed(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let other = company(s).await;
    let entry = s
        .log_activity(NewActivity {
            company_id: c.id,
            actor_type: "user".into(),
            actor_id: "local".into(),
            action: "environment.created".into(),
            entity_type: "environment".into(),
            entity_id: "e1".into(),
            details: json!({"name": "x"}),
        })
        .await
        .unwrap();
    assert_eq!(
        s.list_activity(c.id, &Page::default()).await.unwrap().items,
        vec![entry]
    );
    assert!(
        s.list_activity(other.id, &Page::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn unknown_stored_enum_is_corrupt_not_defaulted(fx: &Fx) {
    let s = &*fx.store;
    let c = company(s).await;
    let e = env(s, c.id, None).await;
    let sql = "UPDATE environments SET driver = 'docker' WHERE name = $1";
    match s.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&fx.url).await.unwrap();
            sqlx::query(sql).bind(&e.name).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&fx.url).await.unwrap();
            sqlx::query(sql).bind(&e.name).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    match s.get_environment(e.id).await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("docker"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

async fn export_import_round_trip_from_sqlite(fx: &Fx) {
    // Source: a populated SQLite store.
    let src_fx = sqlite_fx().await.unwrap();
    let src = &*src_fx.store;
    let c = src.ensure_default_company().await.unwrap();
    let key = secret(c.id, "k");
    let mut n = new_env(c.id, "remote", Some(3));
    n.config["privateKeySecretRef"] = secret_ref(key.id);
    n.metadata = Some(json!({"nested": {"a": [1, 2.5, "x"]}}));
    let e = src.create_environment(n, vec![key]).await.unwrap();
    src.set_company_default_environment(c.id, Some(e.id))
        .await
        .unwrap();
    let a = src
        .create_agent(NewAgent {
            company_id: c.id,
            name: "a".into(),
            adapter_type: "process".into(),
            adapter_config: json!({"command": "echo"}),
            default_environment_id: Some(e.id),
            grants: vec!["g".into()],
        })
        .await
        .unwrap();
    let p = src
        .create_project(NewProject {
            company_id: c.id,
            name: "p".into(),
            execution_workspace_policy: json!({"environmentId": e.id}),
        })
        .await
        .unwrap();
    let w = src
        .create_execution_workspace(NewExecutionWorkspace {
            company_id: c.id,
            project_id: Some(p.id),
            local_path: "/w".into(),
            config: json!({}),
        })
        .await
        .unwrap();
    src.create_issue(NewIssue {
        company_id: c.id,
        project_id: Some(p.id),
        title: "i".into(),
        assignee_agent_id: Some(a.id),
        execution_workspace_id: Some(w.id),
        execution_workspace_settings: json!({"environmentId": null}),
    })
    .await
    .unwrap();
    let l = src
        .acquire_lease(req(
            &e,
            "workspace:w",
            LeasePolicy::ReuseByExecutionWorkspace,
            None,
        ))
        .await
        .unwrap();
    src.release_lease(l.id, l.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    let held = src
        .acquire_lease(req(&e, "workspace:v", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let r = new_run(src, c.id, a.id).await;
    src.update_run(
        r.id,
        RunPatch {
            lease_id: Some(Some(held.id)),
            status: Some(RunStatus::Running),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    src.append_run_event(r.id, "stdout", json!({"line": "hi"}))
        .await
        .unwrap();
    src.append_run_event(r.id, "stderr", json!({"line": "oops"}))
        .await
        .unwrap();
    src.create_token(
        ApiToken {
            id: TokenId::new(),
            name: "t".into(),
            prefix: "brth_x".into(),
            kind: TokenKind::Agent,
            company_ids: vec![c.id],
            agent_id: Some(a.id),
            grants: vec![],
            instance_admin: false,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        },
        "cafe",
    )
    .await
    .unwrap();
    src.set_experimental_settings(&ExperimentalSettings {
        enable_environments: true,
        ..ExperimentalSettings::default()
    })
    .await
    .unwrap();
    src.log_activity(NewActivity {
        company_id: c.id,
        actor_type: "system".into(),
        actor_id: "berth".into(),
        action: "a".into(),
        entity_type: "run".into(),
        entity_id: r.id.to_string(),
        details: json!({}),
    })
    .await
    .unwrap();

    let dump = src.export_all().await.unwrap();
    assert_eq!(dump.companies.len(), 1);
    assert_eq!(dump.environments.len(), 2);
    assert_eq!(dump.leases.len(), 2);
    assert_eq!(dump.run_events.len(), 2);
    fx.store.import_all(dump.clone()).await.unwrap();
    let copied = fx.store.export_all().await.unwrap();
    assert_eq!(copied, dump);
    // The target is not empty any more.
    let err = fx.store.import_all(dump.clone()).await.unwrap_err();
    assert_eq!(conflict_code(&err), Some(ConflictCode::NotEmpty));
    // The copy is live: fences continue above the imported ones, the held lease still holds.
    let busy = fx
        .store
        .acquire_lease(req(&e, "workspace:v", LeasePolicy::Ephemeral, None))
        .await
        .unwrap_err();
    assert_eq!(conflict_code(&busy), Some(ConflictCode::LeaseConflict));
    let next = fx
        .store
        .acquire_lease(req(
            &e,
            "workspace:w",
            LeasePolicy::ReuseByExecutionWorkspace,
            None,
        ))
        .await
        .unwrap();
    assert!(next.fence > held.fence);
    assert_eq!(next.resumed_from_lease_id, Some(l.id));
}

// ---- backend-specific -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_data_and_accepts_a_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there/berth.db");
    let path = path.to_string_lossy().into_owned();
    let first = SqliteStore::open(&path).await.unwrap();
    let c = first.ensure_default_company().await.unwrap();
    drop(first);
    let again = SqliteStore::open(&format!("sqlite://{path}"))
        .await
        .unwrap();
    assert_eq!(again.ensure_default_company().await.unwrap(), c);
    let memory = SqliteStore::open("sqlite::memory:").await.unwrap();
    let m = memory.ensure_default_company().await.unwrap();
    let local = memory.ensure_local_environment(m.id).await.unwrap();
    let e = req(&local, "run:1", LeasePolicy::Ephemeral, None);
    memory.acquire_lease(e).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_migrate_concurrently_and_wake_each_others_waiters() {
    let Some(db) = TestDatabase::create_or_skip().await.unwrap() else {
        return;
    };
    // Two control-plane instances starting at once: migrations serialize on the advisory lock.
    let (a, b) = tokio::join!(PgStore::connect(db.url()), PgStore::connect(db.url()));
    let (a, b) = (a.unwrap(), b.unwrap());
    let c = a.ensure_default_company().await.unwrap();
    assert_eq!(b.ensure_default_company().await.unwrap().id, c.id);
    let e = env(&a, c.id, None).await;
    let held = a
        .acquire_lease(req(&e, "workspace:shared", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let waiter = {
        let b = b.clone();
        let r = req(
            &e,
            "workspace:shared",
            LeasePolicy::Ephemeral,
            Some(Duration::from_secs(30)),
        );
        tokio::spawn(async move {
            let l = b.acquire_lease(r).await.unwrap();
            (l, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    a.release_lease(held.id, held.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    let (l, woke_at) = waiter.await.unwrap();
    assert!(l.fence > held.fence);
    // Woken by NOTIFY, well before the next one-second poll would have found it.
    let latency = woke_at.duration_since(released_at);
    assert!(
        latency < Duration::from_millis(900),
        "woken after {latency:?}"
    );
}

async fn status_counts_group_runs_and_leases(fx: &Fx) {
    let s = &*fx.store;
    assert_eq!(s.run_status_counts().await.unwrap(), vec![]);
    let c = company(s).await;
    let a = agent(s, c.id).await;
    let e = env(s, c.id, None).await;
    let r1 = new_run(s, c.id, a.id).await;
    new_run(s, c.id, a.id).await;
    s.update_run(
        r1.id,
        RunPatch {
            status: Some(RunStatus::Running),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let held = s
        .acquire_lease(req(&e, "scope:a", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    let done = s
        .acquire_lease(req(&e, "scope:b", LeasePolicy::Ephemeral, None))
        .await
        .unwrap();
    s.release_lease(done.id, done.fence, RunOutcome::Succeeded, None)
        .await
        .unwrap();
    let mut runs = s.run_status_counts().await.unwrap();
    runs.sort_by_key(|(st, _)| st.as_str());
    assert_eq!(runs, vec![(RunStatus::Queued, 1), (RunStatus::Running, 1)]);
    let mut leases = s.lease_status_counts().await.unwrap();
    leases.sort_by_key(|(st, _)| st.as_str());
    assert_eq!(
        leases,
        vec![(LeaseStatus::Active, 1), (LeaseStatus::Released, 1)]
    );
    let _ = held;
}

async fn remote_sessions_are_saved_replaced_and_runs_reclaimed_after_a_restart(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let r = new_run(&*fx.store, c.id, a.id).await;
    assert_eq!(fx.store.get_remote_session(r.id).await.unwrap(), None);
    let claimed = fx.store.claim_next_run("gone").await.unwrap().unwrap();
    assert_eq!(claimed.id, r.id);
    let first = serde_json::json!({"attempt": 1, "pgid": 4242});
    fx.store
        .save_remote_session(r.id, None, first.clone())
        .await
        .unwrap();
    assert_eq!(
        fx.store.get_remote_session(r.id).await.unwrap(),
        Some(first)
    );
    let second = serde_json::json!({"attempt": 2, "pgid": 4343});
    fx.store
        .save_remote_session(r.id, None, second.clone())
        .await
        .unwrap();
    assert_eq!(
        fx.store.get_remote_session(r.id).await.unwrap(),
        Some(second)
    );
    // A session of a run that does not exist is a not-found, not a database error.
    let missing = RunId(uuid::Uuid::now_v7());
    assert!(matches!(
        fx.store
            .save_remote_session(missing, None, serde_json::json!({}))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // The restarted process takes over what the old one was running, once.
    let queued = new_run(&*fx.store, c.id, a.id).await;
    let mine = fx.store.reclaim_runs_not_claimed_by("new").await.unwrap();
    assert_eq!(mine.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r.id]);
    assert_eq!(mine[0].claimed_by.as_deref(), Some("new"));
    assert_eq!(mine[0].status, RunStatus::Running);
    assert!(
        fx.store
            .reclaim_runs_not_claimed_by("new")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        fx.store.get_run(queued.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
}

async fn pre_launch_runs_of_a_silent_instance_are_claimed_back(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let dead = format!("dead-{}", uuid::Uuid::now_v7());
    let alive = format!("alive-{}", uuid::Uuid::now_v7());
    let me = format!("me-{}", uuid::Uuid::now_v7());
    fx.store.heartbeat_instance(&dead).await.unwrap();
    // Four runs of the instance that falls silent: waiting for a lease, launching, streaming
    // (session recorded) and cancel-requested while syncing; one of a live instance.
    let mut claimed = Vec::new();
    for phase in ["lease", "launch", "stream", "realize"] {
        new_run(&*fx.store, c.id, a.id).await;
        let r = fx.store.claim_next_run(&dead).await.unwrap().unwrap();
        fx.store.set_run_phase(r.id, phase).await.unwrap();
        claimed.push(r.id);
    }
    fx.store
        .save_remote_session(claimed[2], None, serde_json::json!({"pgid": 7}))
        .await
        .unwrap();
    assert!(fx.store.request_run_cancel(claimed[3]).await.unwrap());
    new_run(&*fx.store, c.id, a.id).await;
    let other = fx.store.claim_next_run(&alive).await.unwrap().unwrap();
    fx.store.set_run_phase(other.id, "lease").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    fx.store.heartbeat_instance(&alive).await.unwrap();

    // Nobody is silent yet as of a moment before the heartbeats.
    let early = fx
        .store
        .claim_runs_of_silent_instances(&me, cut - chrono::TimeDelta::seconds(60))
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:?}");
    let mut taken: Vec<RunId> = fx
        .store
        .claim_runs_of_silent_instances(&me, cut)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    taken.sort();
    let mut expected = vec![claimed[0], claimed[3]];
    expected.sort();
    assert_eq!(taken, expected, "only the runs that never launched");
    assert!(
        fx.store
            .claim_runs_of_silent_instances(&me, cut)
            .await
            .unwrap()
            .is_empty(),
        "claimed once"
    );
    assert!(fx.store.requeue_run(claimed[0], &me).await.unwrap());
    assert!(fx.store.requeue_run(claimed[3], &me).await.unwrap());
    let requeued = fx.store.get_run(claimed[0]).await.unwrap().unwrap();
    assert_eq!(requeued.status, RunStatus::Queued);
    assert_eq!(requeued.claimed_by, None);
    let cancelled = fx.store.get_run(claimed[3]).await.unwrap().unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled, "the cancel wins");
    assert!(cancelled.finished_at.is_some());
}

async fn one_instance_at_a_time_holds_the_reaper_lock(fx: &Fx) {
    if !fx.url.starts_with("postgres") {
        assert!(fx.store.hold_reaper_lock().await.unwrap());
        assert!(
            fx.store.hold_reaper_lock().await.unwrap(),
            "kept while held"
        );
        return;
    }
    let a = PgStore::connect(&fx.url).await.unwrap();
    let b = PgStore::connect(&fx.url).await.unwrap();
    assert!(a.hold_reaper_lock().await.unwrap());
    assert!(a.hold_reaper_lock().await.unwrap(), "kept while held");
    assert!(
        !b.hold_reaper_lock().await.unwrap(),
        "a second instance must not sweep at the same time"
    );
    assert!(!fx.store.hold_reaper_lock().await.unwrap());
    // The holder goes away (its connections close with it): another one takes over.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !b.hold_reaper_lock().await.unwrap() {
        assert!(Instant::now() < deadline, "the lock was never given up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!fx.store.hold_reaper_lock().await.unwrap());
}

async fn the_latest_saved_session_is_the_agents_newest_on_the_same_workspace(fx: &Fx) {
    let c = company(&*fx.store).await;
    let a = agent(&*fx.store, c.id).await;
    let other_agent = agent(&*fx.store, c.id).await;
    let save = |run: RunId, id: &str| {
        let store = fx.store.clone();
        let params = json!({"sessionId": id});
        async move {
            store
                .update_run(
                    run,
                    RunPatch {
                        session_params: Some(Some(params)),
                        ..RunPatch::default()
                    },
                )
                .await
                .unwrap();
        }
    };
    let old = new_run(&*fx.store, c.id, a.id).await;
    save(old.id, "old").await;
    let newer = new_run(&*fx.store, c.id, a.id).await;
    save(newer.id, "newer").await;
    let _unsaved = new_run(&*fx.store, c.id, a.id).await;
    let foreign = new_run(&*fx.store, c.id, other_agent.id).await;
    save(foreign.id, "other agent").await;
    let current = new_run(&*fx.store, c.id, a.id).await;
    let got = fx
        .store
        .latest_session_params(c.id, a.id, None, current.id)
        .await
        .unwrap();
    assert_eq!(got, Some(json!({"sessionId": "newer"})));
    // The run itself never counts; another workspace has nothing saved.
    let got = fx
        .store
        .latest_session_params(c.id, a.id, None, newer.id)
        .await
        .unwrap();
    assert_eq!(got, Some(json!({"sessionId": "old"})));
    let ws = ExecutionWorkspaceId::new();
    assert_eq!(
        fx.store
            .latest_session_params(c.id, a.id, Some(ws), current.id)
            .await
            .unwrap(),
        None
    );
}

/// Two instances (two stores on one database; one store twice on SQLite) × 32 acquirers race
/// for 5 scopes of an environment with capacity 3, acquiring and releasing
/// `BERTH_LEASE_STRESS_OPS` times in all (default 10,000): never two holders of a scope,
/// never more than 3 holders, fences strictly increasing per scope.
async fn two_instances_of_32_acquirers_never_double_grant_or_exceed_capacity(fx: &Fx) {
    let ops: usize = std::env::var("BERTH_LEASE_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let c = company(&*fx.store).await;
    let e = env(&*fx.store, c.id, Some(3)).await;
    let second: Arc<dyn Store> = if fx.url.starts_with("postgres") {
        Arc::new(PgStore::connect(&fx.url).await.unwrap())
    } else {
        fx.store.clone()
    };
    let stores = [fx.store.clone(), second];
    let done = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));
    let holders: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
    let on_env = Arc::new(AtomicUsize::new(0));
    let last_fence: Arc<std::sync::Mutex<std::collections::HashMap<usize, i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let s = stores[i % 2].clone();
        let (done, granted, holders, on_env, last_fence) = (
            done.clone(),
            granted.clone(),
            holders.clone(),
            on_env.clone(),
            last_fence.clone(),
        );
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while done.fetch_add(1, Ordering::SeqCst) < ops {
                n = n.wrapping_mul(31).wrapping_add(7);
                let scope = n % 5;
                let r = req(&e, &format!("run:{scope}"), LeasePolicy::Ephemeral, None);
                let lease = match s.acquire_lease(r).await {
                    Ok(l) => l,
                    Err(err) => {
                        assert!(conflict_code(&err).is_some(), "{err:?}");
                        continue;
                    }
                };
                granted.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    holders[scope].fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders of scope {scope} at once"
                );
                assert!(
                    on_env.fetch_add(1, Ordering::SeqCst) < 3,
                    "capacity 3 exceeded"
                );
                {
                    let mut f = last_fence.lock().unwrap();
                    let prev = f.insert(scope, lease.fence).unwrap_or(0);
                    assert!(lease.fence > prev, "fence went back on scope {scope}");
                }
                tokio::task::yield_now().await;
                on_env.fetch_sub(1, Ordering::SeqCst);
                holders[scope].fetch_sub(1, Ordering::SeqCst);
                s.release_lease(lease.id, lease.fence, RunOutcome::Succeeded, None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        granted.load(Ordering::SeqCst) > ops / 20,
        "hardly anything was granted"
    );
    let active = fx
        .store
        .list_leases(e.id, Some(LeaseStatus::Active), &Page::all())
        .await
        .unwrap();
    assert!(active.items.is_empty());
}
