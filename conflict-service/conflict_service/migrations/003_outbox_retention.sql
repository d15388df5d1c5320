-- Published outbox rows are kept for a while (published_at set, pruned by the relay) so that
-- the relay can publish them again after a broker lost its state (see offsync_shared.outbox).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS published_at timestamptz;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
