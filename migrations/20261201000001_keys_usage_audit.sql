-- Managed keys, the usage ledger and the audit trail.
--
-- One text for SQLite and PostgreSQL: only BIGINT and TEXT columns, times in epoch
-- milliseconds (UTC), money in integer nano-dollars (1e-9 USD) so sums are exact.

-- Keys issued through the admin API. The secret is never stored: only its SHA-256 digest (hex).
-- `id` is public (it is part of the key, `sk-spark-{id}-{secret}`), so a lookup by id is not a
-- timing oracle; the digest comparison that follows is constant-time.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    prefix TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    budget_limit_nusd BIGINT,
    budget_period TEXT,
    rate_limit TEXT,
    -- A JSON array of model names, or NULL for every model.
    models TEXT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revoked_at BIGINT
);
-- Replicas poll for keys changed since their last look.
CREATE INDEX api_keys_updated_at ON api_keys (updated_at);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- One row per request that reached a provider or the cache. Never prompt text.
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    time BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    user_id TEXT NOT NULL,
    route TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    engine TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    cost_nusd BIGINT NOT NULL,
    status TEXT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX usage_records_time ON usage_records (time);
CREATE INDEX usage_records_user_time ON usage_records (user_id, time);
CREATE INDEX usage_records_key_time ON usage_records (key_id, time);

-- Append-only, hash-chained: hash = sha256(prev_hash || canonical row). `id` is the position in
-- the chain, handed out by `audit_head`, whose single row every append updates: that row lock
-- (PostgreSQL) or the write lock (SQLite) serializes appends from every replica.
CREATE TABLE audit_log (
    id BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    request_id TEXT,
    client_address TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
