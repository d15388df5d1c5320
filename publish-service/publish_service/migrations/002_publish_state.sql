-- publish-service's own state beside the read contract of 001 (which stays unchanged).

-- The newest published version of each profile, with its items (the bucket planner's input).
CREATE TABLE published_profiles (
    profile_id text PRIMARY KEY,
    version int NOT NULL,
    items jsonb NOT NULL
);

-- Users of each profile's newest published version (a user is in at most one profile).
CREATE TABLE profile_members (
    user_id text PRIMARY KEY,
    profile_id text NOT NULL
);
CREATE INDEX profile_members_profile ON profile_members(profile_id);

-- Bumped whenever the set of buckets changes, so every worker reloads its bucket registry.
CREATE TABLE registry_generation (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    generation bigint NOT NULL DEFAULT 0
);
INSERT INTO registry_generation DEFAULT VALUES;

-- Entities whose records were copied into record_index once; from then on every RecordChanged
-- keeps the index current, so later publishes need not copy them again.
CREATE TABLE mirrored_entities (entity text PRIMARY KEY);

-- createdon/modifiedon for custom filters (additive to the read contract's record_index).
ALTER TABLE record_index ADD COLUMN created_at timestamptz, ADD COLUMN modified_at timestamptz;

-- Incremental refresh of related-record buckets looks up which parent buckets hold a record.
CREATE INDEX bucket_ops_record ON bucket_ops(entity, record_id) WHERE op = 'put';
