-- +goose Up
-- Times are unix microseconds (UTC); lists, maps, windows and quotas are JSON text.

CREATE TABLE consumers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    plan        TEXT NOT NULL DEFAULT '',
    rate_limits TEXT NOT NULL DEFAULT 'null',
    quota       TEXT,
    metadata    TEXT NOT NULL DEFAULT 'null',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX consumers_created ON consumers (created_at DESC, id DESC);
CREATE INDEX consumers_plan ON consumers (plan) WHERE deleted_at IS NULL;

CREATE TABLE plans (
    name           TEXT PRIMARY KEY,
    rate_limits    TEXT NOT NULL DEFAULT 'null',
    quota          TEXT,
    scopes_allowed TEXT NOT NULL DEFAULT 'null',
    max_age        BIGINT,
    managed_by     TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX plans_created ON plans (created_at DESC, name DESC);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    consumer_id    TEXT NOT NULL REFERENCES consumers (id),
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    env            TEXT NOT NULL,
    start          TEXT NOT NULL,
    scopes         TEXT NOT NULL DEFAULT 'null',
    plan           TEXT NOT NULL DEFAULT '',
    rate_limits    TEXT NOT NULL DEFAULT 'null',
    quota          TEXT,
    ip_allow       TEXT NOT NULL DEFAULT 'null',
    referrer_allow TEXT NOT NULL DEFAULT 'null',
    expires_at     BIGINT,
    state          TEXT NOT NULL,
    revoked_at     BIGINT,
    revoke_reason  TEXT,
    rotated_from   TEXT,
    rotated_to     TEXT,
    max_age        BIGINT,
    last_used_at   BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    metadata       TEXT NOT NULL DEFAULT 'null',
    hash           BYTEA NOT NULL,
    limiter_id     TEXT NOT NULL
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
CREATE INDEX api_keys_created ON api_keys (created_at DESC, id DESC);
CREATE INDEX api_keys_consumer ON api_keys (consumer_id, created_at DESC, id DESC);
CREATE INDEX api_keys_plan ON api_keys (plan) WHERE state <> 'revoked';

CREATE TABLE root_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    start        TEXT NOT NULL,
    permissions  TEXT NOT NULL DEFAULT 'null',
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    created_by   TEXT NOT NULL DEFAULT '',
    hash         BYTEA NOT NULL
);
CREATE UNIQUE INDEX root_keys_hash ON root_keys (hash);
CREATE INDEX root_keys_created ON root_keys (created_at DESC, id DESC);

-- seq orders the chain.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    ip          TEXT NOT NULL,
    result      TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT 'null',
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_target ON audit_log (target_id, seq);
CREATE INDEX audit_log_ts ON audit_log (ts);

-- The one row every append reads and moves on: it orders appends across nodes.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       INTEGER NOT NULL,
    body         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);

-- Durable usage counters (SPEC §5): successful requests per key and UTC day (midnight, µs).
CREATE TABLE usage_daily (
    key_id      TEXT NOT NULL,
    day         BIGINT NOT NULL,
    consumer_id TEXT NOT NULL,
    limiter_id  TEXT NOT NULL,
    requests    BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
CREATE INDEX usage_daily_limiter ON usage_daily (limiter_id, day);
CREATE INDEX usage_daily_consumer ON usage_daily (consumer_id, day);

-- +goose Down
DROP TABLE usage_daily;
DROP TABLE idempotency;
DROP TABLE audit_head;
DROP TABLE audit_log;
DROP TABLE root_keys;
DROP TABLE api_keys;
DROP TABLE plans;
DROP TABLE consumers;
