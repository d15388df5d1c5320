-- record_index becomes partitioned by entity, so that an entity's first copy can fill a table
-- of its own and build its primary key once, sorted, instead of inserting 750k rows one by one
-- into a b-tree shared with every other entity (about half of the copy's CPU:
-- docs/performance.md, "publish", round five). Readers see the same relation, columns and key.
--
-- Rows of entities that have no partition yet (records indexed by RecordChanged before their
-- entity's first copy) live in the default partition, record_index_rest; the first copy moves
-- them into the entity's new partition (publish_service.first_copy). An existing table is kept
-- whole as the partition of the entities it holds: nothing is copied at upgrade.

-- Which partition holds each entity that has one of its own (the default holds the rest).
CREATE TABLE record_index_partitions (entity text PRIMARY KEY, partition text NOT NULL);

ALTER TABLE record_index RENAME TO record_index_legacy;
ALTER INDEX record_index_pkey RENAME TO record_index_legacy_pkey;
-- Index names on the old table would shadow the partitioned table's CREATE INDEX IF NOT EXISTS
-- (rules.buckets.link_indexes): the old ones move aside; creating them on the parent then
-- attaches them instead of building them again.
DO $$
DECLARE i text;
BEGIN
    FOR i IN SELECT indexname FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'record_index_legacy'
               AND indexname LIKE 'record_index_link_%' LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', i, 'legacy_' || substr(i, length('record_index_') + 1));
    END LOOP;
END $$;

CREATE TABLE record_index (LIKE record_index_legacy INCLUDING DEFAULTS) PARTITION BY LIST (entity);
ALTER TABLE record_index ADD PRIMARY KEY (entity, record_id);
CREATE TABLE record_index_rest PARTITION OF record_index DEFAULT;

DO $$
DECLARE held text[];
BEGIN
    SELECT array_agg(e ORDER BY e) INTO held FROM (
        SELECT DISTINCT entity AS e FROM record_index_legacy UNION SELECT entity FROM mirrored_entities
    ) x;
    IF held IS NULL THEN
        DROP TABLE record_index_legacy;
    ELSE
        EXECUTE format('ALTER TABLE record_index ATTACH PARTITION record_index_legacy FOR VALUES IN (%s)',
                       (SELECT string_agg(quote_literal(e), ', ') FROM unnest(held) e));
        INSERT INTO record_index_partitions SELECT e, 'record_index_legacy' FROM unnest(held) e;
    END IF;
END $$;
