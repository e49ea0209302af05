-- Running agents on the control-plane host is a privilege an instance admin grants per
-- company (SPEC §11). The oldest company is the single-user install's `default`: it keeps it.
ALTER TABLE companies ADD COLUMN host_execution BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE companies SET host_execution = TRUE
WHERE id = (SELECT id FROM companies ORDER BY created_at, id LIMIT 1);
