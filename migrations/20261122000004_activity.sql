-- Workspace activity (coalesced: written only when it moves meaningfully)
-- and `berth extend` deadlines.
CREATE TABLE workspace_activity (
    workspace_uid UUID PRIMARY KEY,
    last_activity_at TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    extended_until TIMESTAMPTZ
);
