-- What a restarted control plane needs to re-attach to a launched agent: the launcher's run
-- directory, process group, attempt and resume decision (JSON; no secret is ever stored here).
ALTER TABLE remote_sessions ADD COLUMN session JSONB NULL;
