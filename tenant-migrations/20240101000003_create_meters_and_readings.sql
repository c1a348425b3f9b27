-- Meters on each site and the readings taken from them; readings are the
-- bulk of a tenant's data, so they are keyed for range scans per meter.
CREATE TABLE meters (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "siteId"    uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    resource    text NOT NULL CHECK (resource IN ('electricity', 'gas', 'water', 'waste')),
    unit        text NOT NULL,
    serial      text,
    "createdAt" timestamptz NOT NULL DEFAULT now(),
    UNIQUE ("siteId", serial)
);

CREATE TABLE readings (
    "meterId"   uuid NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    "takenAt"   timestamptz NOT NULL,
    value       numeric(14, 3) NOT NULL CHECK (value >= 0),
    source      text NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'import', 'api')),
    PRIMARY KEY ("meterId", "takenAt")
);
