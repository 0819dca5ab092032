-- Per-object leases: a reconcile of one object runs in one replica at a
-- time. A lease expires unless its holder renews it (a dead replica loses
-- its leases); `token` increases on every takeover and fences late writes.
CREATE TABLE leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL DEFAULT 1,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX leases_holder ON leases (holder);
