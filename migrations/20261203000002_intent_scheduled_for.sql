-- An autostart may begin before its scheduled time (so the workspace is
-- Running by then). `scheduled_for` keeps that time: the workspace's
-- inactivity clock starts no earlier than it.
ALTER TABLE power_intents ADD COLUMN scheduled_for TIMESTAMPTZ;
