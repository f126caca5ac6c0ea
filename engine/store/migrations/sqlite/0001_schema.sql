-- Keyway schema (SQLite). Keep in step with ../postgres/0001_schema.sql: same tables,
-- same columns, same constraints; only the column types differ.
-- Times are integers: seconds since the Unix epoch, except entries.at (microseconds).

-- The revision counter: one row. Every model mutation bumps it in its own transaction,
-- which serialises writers, so revisions commit in order and without gaps.
CREATE TABLE revision_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision_counter (id, value) VALUES (1, 0);

-- One row per revision: the change, encoded as versioned JSON (see src/codec.rs).
CREATE TABLE change_log (
    revision INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    change TEXT NOT NULL
);

-- The audit log of admin changes: who, what, when, before and after.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    revision INTEGER REFERENCES change_log (revision),
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_log_entity ON audit_log (entity, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- The decision core's model.
CREATE TABLE calendars (
    id INTEGER PRIMARY KEY,
    dates TEXT NOT NULL
);

CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    time_zone TEXT NOT NULL,
    holiday_calendar INTEGER REFERENCES calendars (id),
    lockdown BOOLEAN NOT NULL DEFAULT FALSE,
    entries_retention_days INTEGER NOT NULL DEFAULT 90 CHECK (entries_retention_days > 0)
);

CREATE TABLE iqs (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX iqs_site ON iqs (site);

CREATE TABLE schedules (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    periods TEXT NOT NULL,
    date_first TEXT,
    date_last TEXT
);

CREATE TABLE doors (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    iq INTEGER REFERENCES iqs (id),
    mode TEXT NOT NULL CHECK (mode IN ('normal', 'office', 'office_scheduled')),
    mode_schedule INTEGER REFERENCES schedules (id),
    lockdown BOOLEAN NOT NULL DEFAULT FALSE,
    name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX doors_site ON doors (site);
CREATE INDEX doors_iq ON doors (iq);

CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    role INTEGER NOT NULL,
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX people_site ON people (site);

CREATE TABLE credentials (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    secret BLOB NOT NULL,
    owner INTEGER REFERENCES people (id) ON DELETE SET NULL,
    valid_from INTEGER,
    valid_until INTEGER,
    offline_access BOOLEAN NOT NULL DEFAULT FALSE,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT credentials_secret_unique UNIQUE (site, kind, secret)
);
CREATE INDEX credentials_owner ON credentials (owner);

CREATE TABLE access_groups (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id),
    schedule INTEGER REFERENCES schedules (id),
    name TEXT NOT NULL DEFAULT ''
);

CREATE TABLE group_doors (
    group_id INTEGER NOT NULL REFERENCES access_groups (id) ON DELETE CASCADE,
    door INTEGER NOT NULL REFERENCES doors (id),
    PRIMARY KEY (group_id, door)
);
CREATE INDEX group_doors_door ON group_doors (door);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES access_groups (id) ON DELETE CASCADE,
    person INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, person)
);
CREATE INDEX group_members_person ON group_members (person);

CREATE TABLE role_flags (
    role INTEGER PRIMARY KEY,
    lockdown_exempt BOOLEAN NOT NULL
);

-- Admin API: accounts and how they sign in.
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    CONSTRAINT accounts_email_unique UNIQUE (email)
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);

CREATE TABLE password_reset_tokens (
    token_hash TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    site INTEGER REFERENCES sites (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER
);

-- Sites: who may administer them, who was invited, what licence they hold.
CREATE TABLE site_memberships (
    site INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role INTEGER NOT NULL,
    person INTEGER REFERENCES people (id) ON DELETE SET NULL,
    is_owner BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (site, account)
);
CREATE INDEX site_memberships_account ON site_memberships (account);

CREATE TABLE invitations (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role INTEGER NOT NULL,
    credential INTEGER REFERENCES credentials (id) ON DELETE SET NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    accepted_at INTEGER
);

CREATE TABLE vouchers (
    id INTEGER PRIMARY KEY,
    site INTEGER REFERENCES sites (id) ON DELETE SET NULL,
    code TEXT NOT NULL UNIQUE,
    max_users INTEGER NOT NULL,
    max_app_users INTEGER NOT NULL,
    valid_from INTEGER,
    valid_until INTEGER,
    created_at INTEGER NOT NULL
);

-- IQs: per-person activation PINs, firmware.
CREATE TABLE iq_activations (
    iq INTEGER NOT NULL REFERENCES iqs (id) ON DELETE CASCADE,
    person INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
    pin_hash TEXT NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    activated_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (iq, person)
);

CREATE TABLE firmware_files (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL,
    UNIQUE (model, version)
);

-- Policy: plugins and the bundles that deploy them.
CREATE TABLE plugins (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wasm BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE policy_bundles (
    id INTEGER PRIMARY KEY,
    site INTEGER REFERENCES sites (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT FALSE,
    uploaded_at INTEGER NOT NULL,
    UNIQUE (site, name, version)
);

CREATE TABLE policy_bundle_plugins (
    bundle INTEGER NOT NULL REFERENCES policy_bundles (id) ON DELETE CASCADE,
    plugin INTEGER NOT NULL REFERENCES plugins (id),
    PRIMARY KEY (bundle, plugin)
);

-- Notifications: what to send where, and the durable outbox.
CREATE TABLE notification_settings (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    account INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    event_kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    enabled BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX notification_settings_site ON notification_settings (site);

CREATE TABLE notification_outbox (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX notification_outbox_due ON notification_outbox (delivered_at, next_attempt_at);

-- The entries log: every decision at a door. No foreign keys: it is history, and
-- outlives the doors and people it names.
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    site INTEGER NOT NULL,
    at INTEGER NOT NULL,
    door INTEGER NOT NULL,
    person INTEGER,
    credential INTEGER,
    method INTEGER NOT NULL,
    allowed BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    revision INTEGER NOT NULL,
    iq INTEGER,
    iq_seq INTEGER
);
CREATE INDEX entries_site_at ON entries (site, at);
CREATE INDEX entries_person_at ON entries (person, at);
CREATE INDEX entries_door_at ON entries (door, at);
CREATE UNIQUE INDEX entries_iq_seq ON entries (iq, iq_seq);
