-- Berth schema (SPEC §3), PostgreSQL dialect: uuid ids, timestamptz, jsonb.

CREATE TABLE companies (
    id UUID PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    default_environment_id UUID NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE environments (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NULL,
    driver TEXT NOT NULL,
    status TEXT NOT NULL,
    config JSONB NOT NULL,
    metadata JSONB NULL,
    capacity BIGINT NULL,
    lease_policy TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX environments_company_name_key ON environments (company_id, name);
CREATE UNIQUE INDEX environments_one_local_per_company ON environments (company_id)
    WHERE driver = 'local';

-- The global fence: strictly increasing across every acquisition of every environment.
CREATE SEQUENCE lease_fence_seq AS BIGINT START WITH 1 MINVALUE 1;

CREATE TABLE environment_leases (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    environment_id UUID NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    execution_workspace_id UUID NULL,
    issue_id UUID NULL,
    run_id UUID NULL,
    agent_id UUID NULL,
    status TEXT NOT NULL,
    lease_policy TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    fence BIGINT NOT NULL UNIQUE,
    provider TEXT NULL,
    provider_lease_id TEXT NULL,
    resumed_from_lease_id UUID NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    released_at TIMESTAMPTZ NULL,
    failure_reason TEXT NULL,
    cleanup_status TEXT NULL,
    metadata JSONB NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX environment_leases_active_scope ON environment_leases (environment_id, scope_key)
    WHERE status = 'active';
CREATE INDEX environment_leases_env_status ON environment_leases (environment_id, status);
CREATE INDEX environment_leases_status_expires ON environment_leases (status, expires_at);

CREATE TABLE secrets (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NULL,
    ciphertext BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX secrets_company_name_key ON secrets (company_id, name);

CREATE TABLE agents (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    adapter_type TEXT NOT NULL,
    adapter_config JSONB NOT NULL,
    default_environment_id UUID NULL REFERENCES environments (id) ON DELETE SET NULL,
    grants JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_company ON agents (company_id);

CREATE TABLE projects (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    execution_workspace_policy JSONB NOT NULL
);
CREATE INDEX projects_company ON projects (company_id);

CREATE TABLE execution_workspaces (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    project_id UUID NULL REFERENCES projects (id) ON DELETE SET NULL,
    local_path TEXT NOT NULL,
    config JSONB NOT NULL
);
CREATE INDEX execution_workspaces_company ON execution_workspaces (company_id);

CREATE TABLE issues (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    project_id UUID NULL REFERENCES projects (id) ON DELETE SET NULL,
    title TEXT NOT NULL,
    assignee_agent_id UUID NULL REFERENCES agents (id) ON DELETE SET NULL,
    execution_workspace_id UUID NULL REFERENCES execution_workspaces (id) ON DELETE SET NULL,
    execution_workspace_settings JSONB NOT NULL
);
CREATE INDEX issues_company ON issues (company_id);

CREATE TABLE runs (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    agent_id UUID NOT NULL REFERENCES agents (id) ON DELETE RESTRICT,
    issue_id UUID NULL REFERENCES issues (id) ON DELETE SET NULL,
    execution_workspace_id UUID NULL REFERENCES execution_workspaces (id) ON DELETE SET NULL,
    environment_id UUID NULL REFERENCES environments (id) ON DELETE SET NULL,
    environment_source TEXT NULL,
    lease_id UUID NULL REFERENCES environment_leases (id) ON DELETE SET NULL,
    status TEXT NOT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL,
    exit_code BIGINT NULL,
    prompt TEXT NOT NULL,
    session_params JSONB NULL,
    result JSONB NULL,
    queued_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ NULL,
    finished_at TIMESTAMPTZ NULL,
    claimed_by TEXT NULL
);
CREATE INDEX runs_company_status ON runs (company_id, status);
CREATE INDEX runs_queue ON runs (status, queued_at, id);

CREATE TABLE run_events (
    run_id UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    stream TEXT NOT NULL,
    payload JSONB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Byte offsets already streamed per remote run, so a restarted control plane re-attaches.
CREATE TABLE remote_sessions (
    run_id UUID PRIMARY KEY NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    lease_id UUID NULL REFERENCES environment_leases (id) ON DELETE SET NULL,
    stdout_offset BIGINT NOT NULL DEFAULT 0,
    stderr_offset BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_tokens (
    id UUID PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    company_ids JSONB NOT NULL,
    agent_id UUID NULL,
    grants JSONB NOT NULL,
    instance_admin BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NULL,
    revoked_at TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX api_tokens_sha256_key ON api_tokens (sha256);

CREATE TABLE instance_settings (
    id SMALLINT PRIMARY KEY NOT NULL CHECK (id = 1),
    experimental JSONB NOT NULL
);
INSERT INTO instance_settings (id, experimental) VALUES (1, '{}');

CREATE TABLE activity_log (
    id UUID PRIMARY KEY NOT NULL,
    company_id UUID NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    details JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE companies ADD CONSTRAINT companies_default_environment_fkey
    FOREIGN KEY (default_environment_id) REFERENCES environments (id) ON DELETE SET NULL;

CREATE INDEX activity_log_company ON activity_log (company_id, id);
