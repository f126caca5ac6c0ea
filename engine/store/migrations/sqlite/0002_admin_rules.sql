-- Keyway schema, second step (sqlite). Keep in step with the other backend's file.
--
-- Rules the admin API relies on, enforced by the database so that two nodes cannot
-- break them by racing:
-- - a site has at most one owner;
-- - at most one policy bundle is active per site (a NULL site is the global bundle);
-- - a global bundle's name and version are unique (NULLs are distinct in UNIQUE).
CREATE UNIQUE INDEX site_memberships_one_owner ON site_memberships (site) WHERE is_owner;
CREATE UNIQUE INDEX policy_bundles_one_active ON policy_bundles (COALESCE(site, 0)) WHERE active;
CREATE UNIQUE INDEX policy_bundles_global_name ON policy_bundles (name, version) WHERE site IS NULL;
CREATE INDEX invitations_site ON invitations (site);
CREATE INDEX api_tokens_account ON api_tokens (account);
CREATE INDEX password_reset_tokens_account ON password_reset_tokens (account);

-- A site's opening hours, evaluated by door rules such as business-hours: a weekly
-- schedule in the same JSON shape as schedules.periods, with an optional date range.
CREATE TABLE site_opening_hours (
    site INTEGER PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    periods TEXT NOT NULL,
    date_first TEXT,
    date_last TEXT,
    updated_at INTEGER NOT NULL
);

-- Which door runs which door rule of the active bundle, and what a rule failure means
-- there (fail-safe keeps the core's verdict, fail-secure denies).
CREATE TABLE door_rules (
    door INTEGER PRIMARY KEY REFERENCES doors (id) ON DELETE CASCADE,
    rule TEXT NOT NULL CHECK (length(rule) BETWEEN 1 AND 64),
    fail_safe BOOLEAN NOT NULL,
    updated_at INTEGER NOT NULL
);
