-- data schema: owned (written) by conflict-service only. Other services may read it.
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Current state of every business record. System columns are first class; everything else is
-- in attributes. Filters may use ownerid, owningbusinessunit, createdon, modifiedon as attributes.
CREATE TABLE records (
    entity text NOT NULL,
    id text NOT NULL,
    version bigint NOT NULL,
    owner_id text,
    owner_type text CHECK (owner_type IN ('user', 'team')),
    business_unit_id text,
    attributes jsonb NOT NULL DEFAULT '{}',
    deleted boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    modified_by text,
    PRIMARY KEY (entity, id)
);
CREATE INDEX records_owner ON records(entity, owner_id);
CREATE INDEX records_bu ON records(entity, business_unit_id);

-- Every batch applied, with its stored answer: a batch id seen again is answered from here.
CREATE TABLE batches (
    batch_id text PRIMARY KEY,
    device_id text NOT NULL,
    user_id text NOT NULL,
    results jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_device ON batches(device_id, applied_at);
