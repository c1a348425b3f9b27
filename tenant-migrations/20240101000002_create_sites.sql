-- Buildings and outdoor sites whose energy, water and waste a company tracks.
CREATE TABLE sites (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('office', 'warehouse', 'retail', 'park', 'other')),
    address     text,
    "floorArea" numeric(12, 2) CHECK ("floorArea" IS NULL OR "floorArea" > 0),
    "managerId" uuid REFERENCES users (id) ON DELETE SET NULL,
    "createdAt" timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sites_manager_idx ON sites ("managerId");
