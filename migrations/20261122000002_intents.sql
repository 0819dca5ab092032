-- Power intents: every decision about whether a workspace should run
-- (a change of spec.running, berth start/stop/restart, autostop, autostart),
-- with its time and reason. The newest decides ("last intent wins").
-- `dedupe_key` makes automatic decisions exactly-once across replicas.
CREATE TABLE power_intents (
    id BIGSERIAL PRIMARY KEY,
    workspace_uid UUID NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('start', 'stop', 'restart')),
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dedupe_key TEXT UNIQUE
);
CREATE INDEX power_intents_workspace ON power_intents (workspace_uid, id DESC);

-- Per-start agent tokens (hashed). The newest one of a workspace is valid.
CREATE TABLE agent_tokens (
    workspace_uid UUID PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
