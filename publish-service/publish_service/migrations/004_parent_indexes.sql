-- Finding which parent buckets hold a record only concerns the entities derived buckets start
-- from: one partial index per such entity (created when its first derived bucket is
-- materialized, see rules.buckets.parent_indexes) replaces the index over every entity's puts,
-- so ops of the other entities (most of a publish) skip one index write.
DO $$
DECLARE e text;
BEGIN
    FOR e IN SELECT DISTINCT definition -> 'filter' ->> 'from' FROM buckets WHERE definition -> 'filter' ->> 'k' = 'rel' LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON bucket_ops (record_id) WHERE op = %L AND entity = %L',
                       'bucket_ops_parent_' || left(md5(e), 16), 'put', e);
    END LOOP;
END $$;
DROP INDEX bucket_ops_record;
