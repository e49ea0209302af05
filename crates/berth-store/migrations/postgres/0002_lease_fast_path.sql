-- The retained lease of a scope is found through an index when a lease is acquired.
CREATE INDEX environment_leases_scope ON environment_leases (environment_id, scope_key, status);

-- A new active lease that resumes a retained one releases it in the same statement.
CREATE FUNCTION environment_leases_release_resumed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE environment_leases
    SET status = 'released', released_at = NEW.acquired_at, last_used_at = NEW.acquired_at,
        updated_at = NEW.acquired_at
    WHERE id = NEW.resumed_from_lease_id AND status = 'retained';
    RETURN NULL;
END;
$$;

CREATE TRIGGER environment_leases_release_resumed AFTER INSERT ON environment_leases
FOR EACH ROW WHEN (NEW.status = 'active' AND NEW.resumed_from_lease_id IS NOT NULL)
EXECUTE FUNCTION environment_leases_release_resumed();
