-- Berth's object store: one table of objects (spec and status separate),
-- a global revision counter (like an etcd revision), a change log for
-- watches, immutable template versions, events and API tokens.

-- One row. Every write takes its row lock and bumps it inside the writing
-- transaction, so revisions are handed out in commit order and a watcher
-- reading "revision > N" can never miss a change committed later with a
-- smaller revision.
CREATE TABLE revision (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    value BIGINT NOT NULL,
    -- Changes at or below this revision were compacted away; a watch from
    -- an older revision gets 410 Gone and must re-list.
    compacted BIGINT NOT NULL DEFAULT 0
);
INSERT INTO revision (value) VALUES (0);

CREATE TABLE objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid UUID NOT NULL UNIQUE,
    generation BIGINT NOT NULL,
    resource_version BIGINT NOT NULL,
    labels JSONB NOT NULL DEFAULT '{}',
    annotations JSONB NOT NULL DEFAULT '{}',
    spec JSONB NOT NULL,
    status JSONB NOT NULL DEFAULT '{}',
    finalizers TEXT[] NOT NULL DEFAULT '{}',
    -- Workspaces' spec.owner, for authorization filters.
    owner TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    deletion_timestamp TIMESTAMPTZ,
    PRIMARY KEY (kind, namespace, name)
);
CREATE INDEX objects_resource_version ON objects (resource_version);
CREATE INDEX objects_owner ON objects (kind, owner);
CREATE INDEX objects_labels ON objects USING GIN (labels);

-- Every write appends the object as written (or as it was when deleted).
CREATE TABLE changes (
    resource_version BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    change_type TEXT NOT NULL CHECK (change_type IN ('ADDED', 'MODIFIED', 'DELETED')),
    owner TEXT,
    object JSONB NOT NULL,
    -- What kind of write made the change: spec, status, intent, finalizers,
    -- delete. Controllers skip their own status writes as triggers.
    write TEXT NOT NULL DEFAULT 'spec',
    -- Whether a person caused it (their work goes ahead of bulk work).
    interactive BOOLEAN NOT NULL DEFAULT FALSE,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX changes_kind_rv ON changes (kind, resource_version);

CREATE TABLE template_versions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    template_uid UUID NOT NULL,
    spec JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name, version)
);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    namespace TEXT NOT NULL,
    involved_kind TEXT NOT NULL,
    involved_name TEXT NOT NULL,
    involved_uid UUID NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('Normal', 'Warning')),
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    source TEXT NOT NULL DEFAULT '',
    first_timestamp TIMESTAMPTZ NOT NULL,
    last_timestamp TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_involved ON events (involved_uid, last_timestamp);
CREATE UNIQUE INDEX events_dedupe ON events (involved_uid, type, reason, md5(message));

CREATE TABLE tokens (
    id UUID PRIMARY KEY,
    user_name TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    -- sha256 of the token; the token itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
