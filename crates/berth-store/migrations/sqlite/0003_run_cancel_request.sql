-- A cancel asked of a run another instance executes: that instance's worker polls for it.
ALTER TABLE runs ADD COLUMN cancel_requested_at TEXT NULL;
