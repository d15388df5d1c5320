-- Sign-in (docs/identity.md): usernames, argon2id password hashes, an identity generation per
-- user row, rotating refresh tokens and the failed-login ledger behind the rate limit.

-- generation: a fresh random value per user row. Tokens carry it (claim "gen"), so a token
-- minted for a user who was deleted and re-created with the same id no longer matches.
ALTER TABLE users ADD COLUMN username text,
                  ADD COLUMN password_hash text,
                  ADD COLUMN password_changed_at timestamptz,
                  ADD COLUMN generation text NOT NULL DEFAULT gen_random_uuid()::text;
-- Usernames are unique regardless of case; users created before this migration sign in with
-- their id until an admin gives them a username.
UPDATE users SET username = id WHERE username IS NULL;
CREATE UNIQUE INDEX users_username_ci ON users (lower(username));

-- One row per refresh token ever issued. A chain (family_id) starts at a login; each refresh
-- marks the presented token rotated and issues its successor in the same family. Presenting a
-- rotated token again means it was copied: the whole family is revoked. Only a hash of the token
-- is stored.
CREATE TABLE refresh_tokens (
    id text PRIMARY KEY,
    family_id text NOT NULL,
    user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    generation text NOT NULL,
    audience text NOT NULL CHECK (audience IN ('device', 'admin')),
    device_id text,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_device ON refresh_tokens (user_id, device_id) WHERE revoked_at IS NULL;

-- Failed sign-ins, per scope ('user': the lower-cased username as typed, known or not;
-- 'address': the client address) for the sliding-window rate limit. Old rows are pruned.
CREATE TABLE login_failures (
    scope text NOT NULL CHECK (scope IN ('user', 'address')),
    key text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON login_failures (scope, key, at);
