-- field_versions: attribute -> the record version that last wrote it; field-level merge uses it
-- to tell which fields the server changed after the version a device based its change on.
ALTER TABLE records ADD COLUMN field_versions jsonb NOT NULL DEFAULT '{}';
CREATE INDEX records_entity_modified ON records(entity, modified_at);

-- Every conflict: both versions, the policy that decided and the outcome.
CREATE TABLE conflicts (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    entity text NOT NULL,
    record_id text NOT NULL,
    user_id text,
    device_id text,
    batch_id text,
    seq int,
    op text NOT NULL,
    policy text NOT NULL,
    outcome text NOT NULL,
    base_version bigint,
    server_version bigint NOT NULL,
    server_record jsonb NOT NULL,   -- {"version","deleted","attributes"} before the change
    client_change jsonb NOT NULL,   -- the change as the device sent it
    result_record jsonb NOT NULL,   -- {"version","deleted","attributes"} after the decision
    lost_fields text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX conflicts_record ON conflicts(entity, record_id);
CREATE INDEX conflicts_user ON conflicts(user_id, id);

-- Sync error ledger: every change not applied as sent (conflict lost, validation, forbidden, ...).
CREATE TABLE sync_errors (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    user_id text NOT NULL,
    device_id text,
    batch_id text,
    seq int,
    entity text NOT NULL,
    record_id text NOT NULL,
    op text NOT NULL,
    code text NOT NULL,
    message text,
    field text,
    change jsonb NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'reapplied', 'failed_again')),
    resolved_at timestamptz,
    resolution jsonb
);
CREATE INDEX sync_errors_user ON sync_errors(user_id, id);
CREATE INDEX sync_errors_code ON sync_errors(code, id);
