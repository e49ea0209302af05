-- Berth schema (SPEC §3), SQLite dialect. Ids are lowercase hyphenated UUID text, timestamps
-- RFC 3339 UTC text with a fixed six-digit fraction (so text order is time order), JSON is text.

CREATE TABLE companies (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    default_environment_id TEXT NULL REFERENCES environments (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE environments (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NULL,
    driver TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT NULL,
    capacity INTEGER NULL,
    lease_policy TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX environments_company_name_key ON environments (company_id, name);
CREATE UNIQUE INDEX environments_one_local_per_company ON environments (company_id)
    WHERE driver = 'local';

-- The global fence counter: one row, bumped inside every acquisition's write transaction.
CREATE TABLE lease_fence (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO lease_fence (id, value) VALUES (1, 0);

CREATE TABLE environment_leases (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    execution_workspace_id TEXT NULL,
    issue_id TEXT NULL,
    run_id TEXT NULL,
    agent_id TEXT NULL,
    status TEXT NOT NULL,
    lease_policy TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    fence INTEGER NOT NULL UNIQUE,
    provider TEXT NULL,
    provider_lease_id TEXT NULL,
    resumed_from_lease_id TEXT NULL,
    acquired_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    released_at TEXT NULL,
    failure_reason TEXT NULL,
    cleanup_status TEXT NULL,
    metadata TEXT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX environment_leases_active_scope ON environment_leases (environment_id, scope_key)
    WHERE status = 'active';
CREATE INDEX environment_leases_env_status ON environment_leases (environment_id, status);
CREATE INDEX environment_leases_status_expires ON environment_leases (status, expires_at);

CREATE TABLE secrets (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NULL,
    ciphertext BLOB NOT NULL,
    nonce BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX secrets_company_name_key ON secrets (company_id, name);

CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    adapter_type TEXT NOT NULL,
    adapter_config TEXT NOT NULL,
    default_environment_id TEXT NULL REFERENCES environments (id) ON DELETE SET NULL,
    grants TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agents_company ON agents (company_id);

CREATE TABLE projects (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    execution_workspace_policy TEXT NOT NULL
);
CREATE INDEX projects_company ON projects (company_id);

CREATE TABLE execution_workspaces (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    project_id TEXT NULL REFERENCES projects (id) ON DELETE SET NULL,
    local_path TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE INDEX execution_workspaces_company ON execution_workspaces (company_id);

CREATE TABLE issues (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    project_id TEXT NULL REFERENCES projects (id) ON DELETE SET NULL,
    title TEXT NOT NULL,
    assignee_agent_id TEXT NULL REFERENCES agents (id) ON DELETE SET NULL,
    execution_workspace_id TEXT NULL REFERENCES execution_workspaces (id) ON DELETE SET NULL,
    execution_workspace_settings TEXT NOT NULL
);
CREATE INDEX issues_company ON issues (company_id);

CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE RESTRICT,
    issue_id TEXT NULL REFERENCES issues (id) ON DELETE SET NULL,
    execution_workspace_id TEXT NULL REFERENCES execution_workspaces (id) ON DELETE SET NULL,
    environment_id TEXT NULL REFERENCES environments (id) ON DELETE SET NULL,
    environment_source TEXT NULL,
    lease_id TEXT NULL REFERENCES environment_leases (id) ON DELETE SET NULL,
    status TEXT NOT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL,
    exit_code INTEGER NULL,
    prompt TEXT NOT NULL,
    session_params TEXT NULL,
    result TEXT NULL,
    queued_at TEXT NOT NULL,
    started_at TEXT NULL,
    finished_at TEXT NULL,
    claimed_by TEXT NULL
);
CREATE INDEX runs_company_status ON runs (company_id, status);
CREATE INDEX runs_queue ON runs (status, queued_at, id);

CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    stream TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Byte offsets already streamed per remote run, so a restarted control plane re-attaches.
CREATE TABLE remote_sessions (
    run_id TEXT PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    lease_id TEXT NULL REFERENCES environment_leases (id) ON DELETE SET NULL,
    stdout_offset INTEGER NOT NULL DEFAULT 0,
    stderr_offset INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    company_ids TEXT NOT NULL,
    agent_id TEXT NULL,
    grants TEXT NOT NULL,
    instance_admin INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT NULL,
    revoked_at TEXT NULL
);
CREATE UNIQUE INDEX api_tokens_sha256_key ON api_tokens (sha256);

CREATE TABLE instance_settings (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    experimental TEXT NOT NULL
);
INSERT INTO instance_settings (id, experimental) VALUES (1, '{}');

CREATE TABLE activity_log (
    id TEXT PRIMARY KEY NOT NULL,
    company_id TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX activity_log_company ON activity_log (company_id, id);
