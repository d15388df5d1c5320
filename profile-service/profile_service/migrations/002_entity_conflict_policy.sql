-- Per-entity override of the org's conflict policy (beyond the seed; NULL = use the org setting).
-- client_wins | server_wins | field_merge (only fields changed on both sides conflict; those go
-- to the org policy's winner).
ALTER TABLE entities ADD COLUMN conflict_policy text
    CHECK (conflict_policy IN ('client_wins', 'server_wins', 'field_merge'));
