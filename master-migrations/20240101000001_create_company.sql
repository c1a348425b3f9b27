-- The master database: one row per company, naming the physical database that
-- holds its data. Column names follow the ORM-created master this tool adopts
-- (quoted camelCase), and IF NOT EXISTS lets `master migrate` adopt such a
-- master in place instead of failing on the existing table.
CREATE TABLE IF NOT EXISTS "Company" (
    id          text PRIMARY KEY,
    slug        text NOT NULL,
    name        text NOT NULL,
    "dbName"    text NOT NULL,
    status      text NOT NULL DEFAULT 'provisioning'
                CHECK (status IN ('provisioning', 'active', 'failed', 'dropped')),
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE UNIQUE INDEX IF NOT EXISTS "Company_slug_key" ON "Company" (slug);
CREATE UNIQUE INDEX IF NOT EXISTS "Company_dbName_key" ON "Company" ("dbName");
