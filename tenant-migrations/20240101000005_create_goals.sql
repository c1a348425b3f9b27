-- Reduction targets (e.g. "cut electricity 20% by 2030") tracked per site or
-- company-wide (siteId NULL).
CREATE TABLE goals (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "siteId"      uuid REFERENCES sites (id) ON DELETE CASCADE,
    resource      text NOT NULL CHECK (resource IN ('electricity', 'gas', 'water', 'waste')),
    "baselineYear" integer NOT NULL CHECK ("baselineYear" BETWEEN 2000 AND 2100),
    "targetYear"  integer NOT NULL,
    "reductionPct" numeric(5, 2) NOT NULL CHECK ("reductionPct" > 0 AND "reductionPct" <= 100),
    "createdAt"   timestamptz NOT NULL DEFAULT now(),
    CHECK ("targetYear" > "baselineYear")
);
