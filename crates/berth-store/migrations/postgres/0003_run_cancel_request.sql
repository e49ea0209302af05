-- A cancel asked of a run another instance executes: that instance's worker polls for it.
ALTER TABLE runs ADD COLUMN cancel_requested_at TIMESTAMPTZ NULL;
CREATE INDEX runs_cancel_requested ON runs (claimed_by) WHERE cancel_requested_at IS NOT NULL;
