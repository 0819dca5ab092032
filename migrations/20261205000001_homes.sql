-- Homes: one EFS access point per owner, namespace and file system, shared
-- by that owner's workspaces there (rooted at <efsRoot>/<namespace>/<owner>).
-- `attempt` is mixed into the access point's client token: it moves on when
-- the recorded access point was deleted behind Berth's back (or the token
-- was used with other parameters), so a new create never reuses a token
-- AWS already answered. An empty access_point_id: not created (or not yet
-- recorded: the create is idempotent with the same attempt).
CREATE TABLE homes (
    file_system_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    owner TEXT NOT NULL,
    access_point_id TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 0,
    -- A create under this attempt was claimed by the workspace `creator`
    -- at create_started_at: the owner's other workspaces wait for it
    -- (one create per home, whatever EFS does with client tokens), and a
    -- later pass that finds no access point recorded knows a create may
    -- have succeeded unrecorded (a crash), and looks for it by its tags
    -- before creating. A claim older than a minute may be taken over.
    creator TEXT,
    create_started_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (file_system_id, namespace, owner)
);
