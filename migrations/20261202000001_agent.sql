-- The workspace agent: per-start identity, connections, scripts and logs.

-- Every new agent token starts a new "start" of the workspace; logs and
-- script states are kept per start.
CREATE SEQUENCE agent_start_seq;
ALTER TABLE agent_tokens ADD COLUMN start_id BIGINT NOT NULL DEFAULT nextval('agent_start_seq');
CREATE INDEX agent_tokens_hash ON agent_tokens (token_hash);

-- Operator replicas and when each last proved alive. An agent session held
-- by a replica whose heartbeat is stale counts as disconnected, so
-- heartbeats of agents cost no database writes.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL DEFAULT '',
    heartbeat_at TIMESTAMPTZ NOT NULL
);

-- The agent of the newest start of each workspace.
CREATE TABLE agent_sessions (
    workspace_uid UUID PRIMARY KEY,
    start_id BIGINT NOT NULL,
    -- The replica holding the connection; NULL once disconnected.
    replica TEXT,
    connected_at TIMESTAMPTZ NOT NULL,
    disconnected_at TIMESTAMPTZ,
    last_seen TIMESTAMPTZ NOT NULL,
    agent_version TEXT NOT NULL DEFAULT '',
    lifecycle TEXT NOT NULL,
    template_version INTEGER
);

CREATE TABLE agent_scripts (
    workspace_uid UUID NOT NULL,
    start_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    blocks_login BOOLEAN NOT NULL,
    run_on_stop BOOLEAN NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    -- Every line below next_seq is stored (or was dropped and counted).
    next_seq BIGINT NOT NULL DEFAULT 0,
    -- Bytes of the lines kept, and lines dropped (oldest first) to stay
    -- under the per-script cap or lost by the agent.
    bytes BIGINT NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_uid, start_id, name)
);

CREATE TABLE agent_logs (
    workspace_uid UUID NOT NULL,
    start_id BIGINT NOT NULL,
    script TEXT NOT NULL,
    seq BIGINT NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at TIMESTAMPTZ NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (workspace_uid, start_id, script, seq)
);
