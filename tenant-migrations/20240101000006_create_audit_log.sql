-- Who changed what, for support investigations. Append-only by convention.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "actorId"   uuid REFERENCES users (id) ON DELETE SET NULL,
    action      text NOT NULL,
    entity      text NOT NULL,
    "entityId"  text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    "createdAt" timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_created_idx ON audit_log ("createdAt");
