-- Running agents on the control-plane host is a privilege an instance admin grants per
-- company (SPEC §11). The oldest company is the single-user install's `default`: it keeps it.
ALTER TABLE companies ADD COLUMN host_execution INTEGER NOT NULL DEFAULT 0;
UPDATE companies SET host_execution = 1
WHERE id = (SELECT id FROM companies ORDER BY created_at, id LIMIT 1);
