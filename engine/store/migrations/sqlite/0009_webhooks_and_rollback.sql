-- Webhook endpoints of a site: where its events are POSTed, signed with the endpoint's
-- secret (HMAC-SHA256; the secret is kept as given, since signing needs it). An
-- endpoint that keeps failing is paused: its deliveries wait until an admin resumes it.
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    paused_at INTEGER,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_site ON webhooks (site);
-- Each attempt to deliver to an endpoint: when, what came back, how long it took.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    webhook INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    outbox INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, id);
-- An outbox row bound for an endpoint names it.
ALTER TABLE notification_outbox ADD COLUMN webhook INTEGER;
CREATE INDEX notification_outbox_webhook ON notification_outbox (webhook);
-- The order in which bundles were made the one in force: a rollback goes to the one before.
ALTER TABLE policy_bundles ADD COLUMN activation_seq INTEGER;
