-- A door runs a chain of rules, in order, each with its own fail mode and its own
-- configuration for the door (a JSON object; `{}` when none). The rule a door had
-- becomes the first of its chain.
CREATE TABLE door_rule_chains (
    door BIGINT NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK (position BETWEEN 0 AND 7),
    rule TEXT NOT NULL CHECK (length(rule) BETWEEN 1 AND 64),
    fail_safe BOOLEAN NOT NULL,
    config TEXT NOT NULL DEFAULT '{}' CHECK (length(config) <= 8192),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (door, position),
    UNIQUE (door, rule)
);
INSERT INTO door_rule_chains (door, position, rule, fail_safe, config, updated_at)
    SELECT door, 0, rule, fail_safe, '{}', updated_at FROM door_rules;
DROP TABLE door_rules;
