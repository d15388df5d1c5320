-- sync schema: owned (written) by publish-service only; sync-service reads it.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The payload devices receive for a record, one row per record in any bucket.
CREATE TABLE record_index (
    entity text NOT NULL,
    record_id text NOT NULL,
    version bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    owner_id text,
    owner_type text,
    business_unit_id text,
    attributes jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (entity, record_id)
);

-- checksum: sum of offsync_shared.checksum.op_hash over the bucket's live records, mod 2^32.
CREATE TABLE buckets (
    id text PRIMARY KEY,
    definition jsonb NOT NULL DEFAULT '{}',
    checksum bigint NOT NULL DEFAULT 0,
    record_count bigint NOT NULL DEFAULT 0,
    last_op_id bigint NOT NULL DEFAULT 0
);

CREATE SEQUENCE op_id_seq;

-- Compacted op log: the latest op per (bucket, record). Op ids are global and monotonic, and
-- op writers serialize on an advisory lock from allocation to commit, so every committed op id
-- set is a prefix: a reader never skips an op that commits later (failure mode 1).
CREATE TABLE bucket_ops (
    bucket_id text NOT NULL,
    entity text NOT NULL,
    record_id text NOT NULL,
    op_id bigint NOT NULL,
    op text NOT NULL CHECK (op IN ('put', 'remove')),
    version bigint NOT NULL,
    PRIMARY KEY (bucket_id, entity, record_id)
);
CREATE INDEX bucket_ops_by_op ON bucket_ops(bucket_id, op_id);

-- The published profile a user's set comes from; no row = no offline data for that user.
CREATE TABLE user_profiles (
    user_id text PRIMARY KEY,
    profile_id text NOT NULL,
    profile_version int NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_buckets (
    user_id text NOT NULL,
    bucket_id text NOT NULL,
    PRIMARY KEY (user_id, bucket_id)
);
CREATE INDEX user_buckets_bucket ON user_buckets(bucket_id);
