-- Browser sessions: a one-time ticket (minted for a signed-in user, good
-- for a minute, used once) is exchanged for an HttpOnly session cookie
-- scoped to one path (an app's, or later the dashboard's). Only hashes of
-- tickets and session ids are kept.
CREATE TABLE web_tickets (
    hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    scope TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE web_sessions (
    hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    scope TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
