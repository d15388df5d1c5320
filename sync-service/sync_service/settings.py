"""Settings of sync-service (env: OFFSYNC_...): the gateway's limits and timings."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """CommonSettings plus the device gateway's knobs (all overridable by OFFSYNC_SYNC_*)."""

    # Ops per `ops` frame: bounds the memory one catch-up step holds for one device.
    sync_page_size: int = 2000
    # Where the field app (/app/) signs in; empty: profile-service's port on the host the browser used.
    app_auth_url: str = ""
    # Application-level frame cap: larger frames get an error frame, the connection stays.
    sync_max_frame_bytes: int = 1024 * 1024
    # Transport hard cap: above it the websocket layer closes with 1009 (cannot be read safely).
    sync_hard_frame_bytes: int = 16 * 1024 * 1024
    # Before the device has authenticated, the transport reads one message of at most this many
    # bytes (a hello: device id, token, one checksum per bucket) and nothing more; larger -> 1009.
    sync_preauth_frame_bytes: int = 64 * 1024
    sync_max_changes: int = 500
    sync_max_pending_batches: int = 4
    # Per-device frame rate (token bucket): refill per second and burst.
    sync_frame_rate: float = 50.0
    sync_frame_burst: int = 100
    # A frame costs 1 + len // this many tokens of the per-device bucket (a 1 MiB frame: 65).
    sync_frame_work_bytes: int = 16 * 1024
    # Per-process connection-rate cap (failure mode 6: reconnect storms), sized from what a
    # reconnect costs the gateway: ~1 ms of CPU (docs/performance.md, "reconnect"), so one core
    # serves ~1,000/s and the refill admits no faster than that. The burst is the storm admitted
    # at once: a fleet of 2,000 devices (a process's reconnect storm in the bench) is served in
    # ~2 s of one core, far inside the hello timeout; larger fleets are spread at the rate. A
    # process that holds more devices may raise the burst to its fleet as long as
    # burst x ~1.5 ms (a busy box) stays well under sync_hello_timeout_s.
    sync_conn_rate: float = 1000.0
    sync_conn_burst: int = 2000
    sync_heartbeat_s: float = 20.0
    sync_idle_timeout_s: float = 60.0
    sync_hello_timeout_s: float = 10.0
    # Client frames waiting to be handled per connection; a full inbox stops reading the socket.
    sync_inbox_size: int = 32
    # How long a pending batch waits for its BatchApplied before the gateway looks in data.batches.
    sync_result_recheck_s: float = 2.0
    # A pending batch with no stored answer this long after it was forwarded may be lost: the
    # device is asked to resend it (same batch id; answered once however often it arrives).
    sync_result_resend_s: float = 30.0
    # Repair net for a notification that never came (a broker that lost its logs, a crash between
    # commit and send): this often the hub compares each bucket's newest op with its sessions, and
    # a session still behind one round later reads on its own. Live delivery never waits on it.
    sync_reconcile_s: float = 5.0
    # Grace after a token's expiry before the session is closed (clock skew).
    sync_token_grace_s: float = 5.0
    sync_drain_timeout_s: float = 5.0
    # Longest wait of the notification consumer's empty fetch: commit -> device latency rides on
    # it, idle fetches grow as it shrinks (figures: docs/performance.md, "The change path").
    sync_notify_fetch_wait_ms: int = 10

    @property
    def port(self) -> int:
        return self.sync_port
