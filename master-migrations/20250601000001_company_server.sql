-- Which PostgreSQL server holds each company's database: a name defined by
-- the environment (POSTGRES_BASE_URL_<NAME>) or tenantctl.toml, never a URL.
-- NULL means the server named default (POSTGRES_BASE_URL), as for every row
-- written before there were several servers.
ALTER TABLE "Company" ADD COLUMN IF NOT EXISTS "dbServer" text;
