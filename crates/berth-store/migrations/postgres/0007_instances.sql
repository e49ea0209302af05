-- Instances sharing the database say they are alive; runs claimed by one that fell silent
-- (killed, partitioned) before launching their agent are queued again by another.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
