-- Per-company configuration, read by the application and written by
-- `tenantctl tenant settings`. Values are JSON so a setting can be a flag,
-- a number or a structure without a schema change.
CREATE TABLE settings (
    key         text PRIMARY KEY CHECK (key <> ''),
    value       jsonb NOT NULL,
    "updatedAt" timestamptz NOT NULL DEFAULT now()
);
