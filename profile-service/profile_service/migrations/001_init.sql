-- admin schema: owned (written) by profile-service only. Other services may read it.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE org_settings (
    org_id text PRIMARY KEY DEFAULT 'default',
    conflict_detection boolean NOT NULL DEFAULT false,   -- false: client wins, true: server wins
    max_records_per_user bigint NOT NULL DEFAULT 3000000,
    row_version int NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE business_units (
    id text PRIMARY KEY,
    name text NOT NULL,
    parent_id text REFERENCES business_units(id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id text PRIMARY KEY,
    name text NOT NULL,
    email text,
    business_unit_id text NOT NULL REFERENCES business_units(id),
    manager_id text REFERENCES users(id),
    language int,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id text PRIMARY KEY,
    name text NOT NULL,
    business_unit_id text NOT NULL REFERENCES business_units(id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    team_id text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members(user_id);

-- privileges: {"<entity>": {"create": depth, "read": depth, "write": depth, "delete": depth}}
-- depth: none | user | business_unit | parent_child | organization
CREATE TABLE roles (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    is_admin boolean NOT NULL DEFAULT false,
    read_offline_profile boolean NOT NULL DEFAULT false,
    privileges jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE user_roles (
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id text NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE team_roles (
    team_id text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    role_id text NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, role_id)
);

-- attributes: {"<name>": {"type": string|int|decimal|bool|datetime|lookup|choice, "required": bool,
--                         "target": "<entity>" (lookup only), "max_length": int?}}
CREATE TABLE entities (
    logical_name text PRIMARY KEY,
    display_name text NOT NULL,
    ownership text NOT NULL CHECK (ownership IN ('user_or_team', 'organization', 'business', 'none')),
    offline_capable boolean NOT NULL DEFAULT true,
    offline_enabled boolean NOT NULL DEFAULT false,
    attributes jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE profiles (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    row_version int NOT NULL DEFAULT 1,                -- optimistic concurrency (ETag)
    has_unpublished_changes boolean NOT NULL DEFAULT true,
    published_version int,                             -- newest published version, NULL if never
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- filter: {"kind": "related"|"all"|"user"|"team"|"business_unit"|"custom", ...}
--   user/team/business_unit may be combined: {"kind": "other", "user": true, "team": true, "business_unit": false}
--   custom: {"kind": "custom", "condition": {"and"|"or": [...]} | {"attribute", "operator", "value"}}
-- relationships: [{"entity": "<other entity in the profile>", "attribute": "<lookup attribute>"}]
CREATE TABLE profile_items (
    profile_id text NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    entity text NOT NULL REFERENCES entities(logical_name),
    filter jsonb NOT NULL,
    relationships jsonb NOT NULL DEFAULT '[]',
    sync_interval_minutes int NOT NULL DEFAULT 5,
    PRIMARY KEY (profile_id, entity)
);

-- Draft membership. user_id is the key: a user is in at most one profile.
CREATE TABLE profile_users (
    user_id text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    profile_id text NOT NULL REFERENCES profiles(id) ON DELETE CASCADE
);

-- Immutable published snapshots: {"items": [...], "user_ids": [...], "name": ...}
CREATE TABLE profile_versions (
    profile_id text NOT NULL,
    version int NOT NULL,
    snapshot jsonb NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    published_by text,
    PRIMARY KEY (profile_id, version)
);

-- Effective membership as of each profile's latest publish (what devices get).
CREATE TABLE published_profile_users (
    user_id text PRIMARY KEY,
    profile_id text NOT NULL,
    version int NOT NULL
);

CREATE TABLE app_modules (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    offline_enabled boolean NOT NULL DEFAULT false
);

CREATE TABLE app_module_profiles (
    app_module_id text NOT NULL REFERENCES app_modules(id) ON DELETE CASCADE,
    profile_id text NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    PRIMARY KEY (app_module_id, profile_id)
);
