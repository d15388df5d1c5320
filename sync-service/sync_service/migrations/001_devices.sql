-- The device registry: one row per (user, device) that ever connected, kept by the gateways.
-- Read (read-only) by profile-service's admin console.
CREATE TABLE devices (
    user_id text NOT NULL,
    device_id text NOT NULL,
    online boolean NOT NULL DEFAULT false,
    gateway text,                      -- the gateway process holding the connection
    seen_at timestamptz,               -- last heartbeat of that gateway for this connection
    connected_at timestamptz,
    disconnected_at timestamptz,
    synced_at timestamptz,             -- last time the device reached a checkpoint
    client text,                       -- SDK / app version the device reported
    profile_id text,
    profile_version int,
    cursor bigint,
    records_held bigint,
    pending_uploads bigint,
    last_error text,
    last_error_at timestamptz,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX devices_seen ON devices (seen_at DESC);
