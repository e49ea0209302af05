-- Acquisition in fewer statements: the fence is read inline by the insert and this trigger
-- advances the counter (never backwards, so imported fences keep it above them), and the
-- retained lease of a scope is found through an index.
CREATE TRIGGER environment_leases_advance_fence AFTER INSERT ON environment_leases
BEGIN
    UPDATE lease_fence SET value = MAX(value, NEW.fence) WHERE id = 1;
END;

CREATE INDEX environment_leases_scope ON environment_leases (environment_id, scope_key, status);

-- A new active lease that resumes a retained one releases it in the same statement.
CREATE TRIGGER environment_leases_release_resumed AFTER INSERT ON environment_leases
WHEN NEW.status = 'active' AND NEW.resumed_from_lease_id IS NOT NULL
BEGIN
    UPDATE environment_leases
    SET status = 'released', released_at = NEW.acquired_at, last_used_at = NEW.acquired_at,
        updated_at = NEW.acquired_at
    WHERE id = NEW.resumed_from_lease_id AND status = 'retained';
END;
