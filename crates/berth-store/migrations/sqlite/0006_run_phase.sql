-- Where a running run is in its pipeline, so a restarted or another instance knows whether
-- to re-attach to its agent or to run it again from the start.
ALTER TABLE runs ADD COLUMN phase TEXT NULL;
