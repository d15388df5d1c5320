-- The audit log of admin changes: who (actor), what (method, route, target, the request body
-- with secrets redacted), when, from which address. Written by profile_service.audit in the
-- transaction of the change it records; append-only (the triggers refuse UPDATE, DELETE and
-- TRUNCATE, whoever asks).
CREATE TABLE IF NOT EXISTS audit_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor_id       text NOT NULL,
    client_address text,
    method         text NOT NULL,
    path           text NOT NULL,
    route          text NOT NULL,
    target_kind    text NOT NULL,
    target_id      text,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target_kind, target_id, id);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin.audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
