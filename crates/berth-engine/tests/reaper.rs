//! SPEC §5/§12: no lease stays active past its TTL; no process or directory outlives its
//! lease's cleanup. Real store (SQLite), real processes in their own process group.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;
use std::time::Duration;

use berth_core::lease::RunOutcome;
use berth_core::model::NewEnvironment;
use berth_core::{CleanupStatus, Driver, EnvironmentStatus, LeasePolicy, LeaseStatus, RunId};
use berth_engine::reaper::{EnvironmentCleaner, Reaper, scope_dir};
use berth_engine::secrets::SecretBox;
use berth_exec::launcher::{LaunchSpec, Launcher};
use berth_exec::{LocalTransport, SshPool};
use berth_store::sqlite::SqliteStore;
use berth_store::{AcquireLease, NewRun, Store};
use serde_json::json;

struct World {
    store: Arc<dyn Store>,
    reaper: Reaper,
    root: tempfile::TempDir,
    _home: tempfile::TempDir,
}

async fn world() -> World {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}", home.path().join("b.db").display()))
            .await
            .unwrap(),
    );
    let secrets = Arc::new(SecretBox::load_or_create(home.path(), None).unwrap());
    let cleaner = EnvironmentCleaner {
        store: store.clone(),
        secrets,
        pool: SshPool::new(),
        local_root: home.path().to_path_buf(),
        grace: Duration::from_millis(500),
    };
    let reaper = Reaper::new(store.clone(), Arc::new(cleaner)).with_orphan_grace(Duration::ZERO);
    World {
        store,
        reaper,
        root,
        _home: home,
    }
}

async fn local_env(w: &World, config: serde_json::Value) -> berth_core::model::Environment {
    let company = w.store.ensure_default_company().await.unwrap();
    w.store
        .create_environment(
            NewEnvironment {
                company_id: company.id,
                name: format!("env-{}", RunId::new()),
                description: None,
                driver: if config.get("host").is_some() {
                    Driver::Ssh
                } else {
                    Driver::Local
                },
                status: EnvironmentStatus::Active,
                config,
                metadata: None,
                capacity: None,
                lease_policy: LeasePolicy::Ephemeral,
            },
            Vec::new(),
        )
        .await
        .unwrap()
}

/// The company's managed local environment, with its Berth root moved to `w.root` (the
/// managed one otherwise uses BERTH_HOME).
async fn rooted_local(
    w: &World,
    company_id: berth_core::CompanyId,
) -> berth_core::model::Environment {
    let local = w.store.ensure_local_environment(company_id).await.unwrap();
    w.store
        .update_environment(
            local.id,
            berth_core::model::EnvironmentPatch {
                config: Some(json!({"workspaceRoot": w.root.path()})),
                ..Default::default()
            },
            Vec::new(),
            Vec::new(),
        )
        .await
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn an_expired_lease_is_reaped_and_its_process_group_and_directories_are_gone() {
    let w = world().await;
    // A local environment whose Berth root is a temp dir (the managed local one uses BERTH_HOME;
    // a second local per company is refused, so use a company of its own).
    let company = w.store.create_company("reaped").await.unwrap();
    let env = rooted_local(&w, company.id).await;
    let agent = w
        .store
        .create_agent(berth_store::NewAgent {
            company_id: company.id,
            name: "a".into(),
            adapter_type: "process".into(),
            adapter_config: json!({}),
            default_environment_id: None,
            grants: vec![],
        })
        .await
        .unwrap();
    let run = w
        .store
        .create_run(NewRun {
            company_id: company.id,
            agent_id: agent.id,
            issue_id: None,
            execution_workspace_id: None,
            prompt: "p".into(),
        })
        .await
        .unwrap();
    let lease = w
        .store
        .acquire_lease(AcquireLease {
            company_id: company.id,
            environment_id: env.id,
            scope_key: format!("run:{}", run.id),
            policy: LeasePolicy::Ephemeral,
            ttl_secs: 1,
            execution_workspace_id: None,
            issue_id: None,
            run_id: Some(run.id),
            agent_id: Some(agent.id),
            provider: Some("local".into()),
            provider_lease_id: None,
            metadata: None,
            wait: None,
        })
        .await
        .unwrap();
    // Its executor claimed the run, took the lease and died.
    assert_eq!(
        w.store.claim_next_run("dead").await.unwrap().unwrap().id,
        run.id
    );
    w.store
        .update_run(
            run.id,
            berth_store::RunPatch {
                lease_id: Some(Some(lease.id)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // What the run left behind: a workspace copy and a process group that ignores TERM and
    // forked a grandchild.
    let ws = w
        .root
        .path()
        .join(".berth/ws")
        .join(scope_dir(&lease.scope_key));
    std::fs::create_dir_all(ws.join("src")).unwrap();
    let launcher = Launcher::new(
        Arc::new(LocalTransport::new()),
        w.root.path().display().to_string(),
    );
    let remote = launcher
        .launch(LaunchSpec {
            run_id: run.id.to_string(),
            command: "trap '' TERM; sleep 300 & sleep 300".into(),
            cwd: w.root.path().display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(alive(remote.pgid));

    let report = w.reaper.sweep().await.unwrap();
    assert!(report.expired.is_empty(), "not expired before its TTL");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let report = w.reaper.sweep().await.unwrap();
    assert_eq!(report.expired, vec![lease.id]);
    assert_eq!(report.cleaned, vec![lease.id], "{report:?}");
    let after = w.store.get_lease(lease.id).await.unwrap().unwrap();
    assert_eq!(after.status, LeaseStatus::Expired);
    // The run no executor will finish is failed, not left `running`.
    assert_eq!(report.orphaned_runs, vec![run.id]);
    let run = w.store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(run.status, berth_core::RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("lease_lost"));
    assert_eq!(after.failure_reason.as_deref(), Some("expired"));
    assert_eq!(after.cleanup_status, Some(CleanupStatus::Success));
    assert!(!ws.exists(), "the workspace copy is removed");
    assert!(
        !std::path::Path::new(&remote.dir).exists(),
        "the run directory is removed"
    );
    // Every process of the group is gone (the grandchild too).
    let survivors: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some(fields.get(2)? == &remote.pgid.to_string() && fields.first()? != &"Z")
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "processes of the group survived: {survivors:?}"
    );
    // The stale holder cannot act any more.
    assert!(matches!(
        w.store
            .release_lease(lease.id, lease.fence, RunOutcome::Succeeded, None)
            .await,
        Err(berth_store::StoreError::LeaseLost { .. })
    ));
    // A second sweep has nothing left to do.
    let report = w.reaper.sweep().await.unwrap();
    assert!(
        report.cleaned.is_empty() && report.expired.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_failed_cleanup_parks_the_lease_in_pending_cleanup_for_retry() {
    let w = world().await;
    // An SSH environment nobody answers on: its cleanup cannot succeed.
    let env = local_env(
        &w,
        json!({"host": "127.0.0.1", "port": 1, "username": "u", "remoteWorkspacePath": "/w"}),
    )
    .await;
    let lease = w
        .store
        .acquire_lease(AcquireLease {
            company_id: env.company_id,
            environment_id: env.id,
            scope_key: "workspace:x".into(),
            policy: LeasePolicy::Ephemeral,
            ttl_secs: 60,
            execution_workspace_id: None,
            issue_id: None,
            run_id: None,
            agent_id: None,
            provider: None,
            provider_lease_id: None,
            metadata: None,
            wait: None,
        })
        .await
        .unwrap();
    w.store
        .release_lease(
            lease.id,
            lease.fence,
            RunOutcome::Failed,
            Some(CleanupStatus::Pending),
        )
        .await
        .unwrap();
    let report = w.reaper.sweep().await.unwrap();
    assert_eq!(report.cleanup_failed, vec![lease.id], "{report:?}");
    let after = w.store.get_lease(lease.id).await.unwrap().unwrap();
    assert_eq!(after.status, LeaseStatus::PendingCleanup);
    assert_eq!(after.cleanup_status, Some(CleanupStatus::Failed));
    assert_eq!(
        after.failure_reason.as_deref(),
        Some("run_failed"),
        "the release reason is kept"
    );
    // Backoff: the next sweep right away does not hammer the environment.
    let report = w.reaper.sweep().await.unwrap();
    assert!(report.cleanup_failed.is_empty(), "{report:?}");
}

/// The scheduled collector removes workspace copies no lease accounts for, once idle, and
/// spares copies of active or retained leases and young copies.
#[tokio::test]
async fn garbage_collection_removes_only_idle_copies_without_a_lease() {
    use berth_engine::reaper::LeaseCleaner as _;
    let w = world().await;
    let home = tempfile::tempdir().unwrap();
    let cleaner = EnvironmentCleaner {
        store: w.store.clone(),
        secrets: Arc::new(SecretBox::load_or_create(home.path(), None).unwrap()),
        pool: SshPool::new(),
        local_root: home.path().to_path_buf(),
        grace: Duration::from_millis(500),
    };
    let company = w.store.create_company("gc").await.unwrap();
    let env = rooted_local(&w, company.id).await;
    let lease = w
        .store
        .acquire_lease(AcquireLease {
            company_id: company.id,
            environment_id: env.id,
            scope_key: format!("workspace:{}", RunId::new()),
            policy: LeasePolicy::ReuseByExecutionWorkspace,
            ttl_secs: 600,
            execution_workspace_id: None,
            issue_id: None,
            run_id: None,
            agent_id: None,
            provider: Some("local".into()),
            provider_lease_id: None,
            metadata: None,
            wait: None,
        })
        .await
        .unwrap();
    let ws = w.root.path().join(".berth/ws");
    let leased = scope_dir(&lease.scope_key);
    for name in [
        leased.as_str(),
        "workspace-orphan-old",
        "workspace-orphan-young",
    ] {
        std::fs::create_dir_all(ws.join(name).join("src")).unwrap();
        std::fs::write(ws.join(format!(".{name}.sync")), "state").unwrap();
    }
    for name in [
        leased.clone(),
        "workspace-orphan-old".to_string(),
        format!(".{leased}.sync"),
        ".workspace-orphan-old.sync".to_string(),
    ] {
        let ok = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(ws.join(name))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let removed = cleaner.collect_garbage().await.unwrap();
    assert_eq!(removed, 1);
    assert!(ws.join(&leased).is_dir(), "the leased copy stays");
    assert!(ws.join(format!(".{leased}.sync")).is_file());
    assert!(
        !ws.join("workspace-orphan-old").exists(),
        "the idle orphan is gone"
    );
    assert!(!ws.join(".workspace-orphan-old.sync").exists());
    assert!(
        ws.join("workspace-orphan-young").is_dir(),
        "a young copy may belong to a lease being created"
    );
}

/// Fencing: the cleanup of an expired lease must not delete the workspace copy a newer lease
/// of the same scope is using (a run that started after the old holder died).
#[tokio::test]
async fn cleanup_of_a_stale_lease_spares_the_copy_of_the_newer_holder() {
    let w = world().await;
    let company = w.store.create_company("fenced").await.unwrap();
    let env = rooted_local(&w, company.id).await;
    let acquire = |ttl: i64| AcquireLease {
        company_id: env.company_id,
        environment_id: env.id,
        scope_key: "workspace:shared".into(),
        policy: LeasePolicy::Ephemeral,
        ttl_secs: ttl,
        execution_workspace_id: None,
        issue_id: None,
        run_id: None,
        agent_id: None,
        provider: None,
        provider_lease_id: None,
        metadata: None,
        wait: None,
    };
    let old = w.store.acquire_lease(acquire(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = w.store.expire_due_leases(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        expired.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![old.id]
    );
    let newer = w.store.acquire_lease(acquire(600)).await.unwrap();
    assert!(newer.fence > old.fence);
    let copy = w
        .root
        .path()
        .join(".berth/ws")
        .join(scope_dir("workspace:shared"));
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("live.txt"), "the newer run's work").unwrap();

    let report = w.reaper.sweep().await.unwrap();
    assert_eq!(report.cleaned, vec![old.id], "{report:?}");
    assert_eq!(
        std::fs::read_to_string(copy.join("live.txt")).unwrap(),
        "the newer run's work",
        "the stale lease's cleanup deleted the newer holder's copy"
    );
    // Once the newer lease ends and is cleaned, the copy goes.
    w.store
        .release_lease(
            newer.id,
            newer.fence,
            RunOutcome::Failed,
            Some(CleanupStatus::Pending),
        )
        .await
        .unwrap();
    let report = w.reaper.sweep().await.unwrap();
    assert_eq!(report.cleaned, vec![newer.id], "{report:?}");
    assert!(!copy.exists());
}
