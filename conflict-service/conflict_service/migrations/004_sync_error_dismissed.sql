-- An admin may dismiss a ledgered change they decided not to re-apply (the console's "dismiss").
ALTER TABLE sync_errors DROP CONSTRAINT IF EXISTS sync_errors_status_check;
ALTER TABLE sync_errors ADD CONSTRAINT sync_errors_status_check
    CHECK (status IN ('open', 'reapplied', 'failed_again', 'dismissed'));
