-- Notices the lifecycle gives once per occasion (dormancy: the warning
-- ahead, the workspace becoming Dormant, the warning before its deletion):
-- a key per workspace and occasion, so that several replicas and every
-- tick record each event once.
CREATE TABLE lifecycle_notices (
    workspace_uid UUID NOT NULL,
    key TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_uid, key)
);
