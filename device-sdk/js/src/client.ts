/**
 * The sync client: one websocket session at a time against /v1/sync, driven by the replica.
 * Frames are handled strictly in arrival order, each stored before the next is looked at; the
 * outbox is sent one batch at a time (resent with the same id after a reconnect); reconnects use
 * jittered backoff, renew the token on 4001 and resume from the last checkpoint.
 */
import { Backoff } from "./backoff.js";
import {
  CLOSE,
  type ClientFrame,
  decodeServer,
  encode,
  ERR,
  type ErrorFrame,
  FEATURE_ENTITY_METADATA,
  FEATURE_OPS_CHECKPOINT,
  FrameError,
  REFUSALS,
  retryAfterFromReason,
  type ServerFrame,
} from "./protocol.js";
import type { Replica } from "./replica.js";

/** Where the client gets its bearer token; `renew` is called after the server said it expired. */
export interface TokenSource {
  token(): Promise<string>;
  renew?(): Promise<string>;
  /** When the current token expires (ms since the epoch), to renew it mid-session. */
  expiresAt?(): number | null;
  /** Forget the stored sign-in: the server ended it (close 4010). */
  signOut?(): void;
}

export interface SyncState {
  /** A session is open and the server accepted the hello. */
  online: boolean;
  connecting: boolean;
  /** Catch-up progress while downloading; null when caught up or offline. */
  downloading: { done: number; total: number } | null;
  /** A batch of offline changes awaits the server's answer. */
  uploading: boolean;
  caughtUp: boolean;
  /** The last problem (connection, refusal, error frame), or null. */
  error: string | null;
  /** The server refused this device for good (forbidden, no profile). */
  refused: boolean;
  /** The sign-in was revoked (signed out elsewhere, device revoked, password changed): the client
   * stopped and forgot its tokens; the user must sign in again. */
  signedOut: boolean;
}

type WebSocketCtor = new (url: string) => WebSocket;

export interface SyncClientOptions {
  url: string;
  replica: Replica;
  auth: TokenSource;
  backoff?: Backoff;
  WebSocket?: WebSocketCtor;
  onState?: (s: SyncState) => void;
  onProblems?: () => void;
}

export class SyncClient {
  state: SyncState = {
    online: false,
    connecting: false,
    downloading: null,
    uploading: false,
    caughtUp: false,
    error: null,
    refused: false,
    signedOut: false,
  };
  private ws: WebSocket | null = null;
  private running = false;
  private attempt = 0;
  private renewed = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  private inflight: string | null = null;
  private maxChanges = 500;
  private welcomed = false;
  private processing: Promise<void> = Promise.resolve();
  private caughtUpWaiters: (() => void)[] = [];
  private readonly backoff: Backoff;
  private readonly WS: WebSocketCtor;

  constructor(private readonly o: SyncClientOptions) {
    this.backoff = o.backoff ?? new Backoff();
    this.WS = o.WebSocket ?? (globalThis.WebSocket as WebSocketCtor);
    o.replica.onLocalChange = () => void this.flush();
  }

  /** Stay connected (live ops; edits are sent as they happen), reconnecting with backoff. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.state.refused = false;
    this.state.signedOut = false;
    this.attempt = 0;
    this.connect();
  }

  /** Disconnect and stay disconnected (until start()). Pending changes stay in the outbox. */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close(1000, "client stopped");
    this.ws = null;
    this.sessionEnded(null);
  }

  /** Resolves once the device is caught up with the server and its outbox is empty. */
  synced(): Promise<void> {
    if (this.isSynced()) return Promise.resolve();
    return new Promise((resolve) => this.caughtUpWaiters.push(resolve));
  }

  private isSynced(): boolean {
    return this.state.caughtUp && this.inflight === null && !this.o.replica.hasPending();
  }

  private setState(patch: Partial<SyncState>): void {
    Object.assign(this.state, patch);
    this.o.onState?.({ ...this.state });
    if (this.isSynced()) {
      const waiters = this.caughtUpWaiters.splice(0);
      for (const w of waiters) w();
    }
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    this.setState({ connecting: true });
    let token: string;
    try {
      token = await this.o.auth.token();
    } catch (e) {
      this.setState({ connecting: false, error: `sign-in needed: ${(e as Error).message}` });
      this.retryLater(0);
      return;
    }
    if (!this.running) return;
    const ws = new this.WS(this.o.url);
    this.ws = ws;
    this.welcomed = false;
    this.inflight = null;
    const r = this.o.replica;
    ws.onopen = () => {
      const hello: ClientFrame = {
        type: "hello",
        device_id: r.deviceId,
        cursor: r.cursor,
        checksums: r.heldChecksums(),
        token,
        features: [FEATURE_OPS_CHECKPOINT, FEATURE_ENTITY_METADATA],
      };
      ws.send(encode(hello));
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      const raw = typeof ev.data === "string" ? ev.data : new TextDecoder().decode(ev.data as ArrayBuffer);
      // One frame at a time, in order: each is stored before the next is handled.
      this.processing = this.processing.then(() => this.onFrame(ws, raw)).catch((e) => this.fail(ws, e));
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      void this.processing.then(() => this.onClosed(ev.code, ev.reason ?? ""));
    };
    ws.onerror = () => {
      // onclose follows with the code; nothing to do here.
    };
  }

  private fail(ws: WebSocket, e: unknown): void {
    const msg = e instanceof FrameError ? `bad frame from server: ${e.message}` : String((e as Error)?.message ?? e);
    this.setState({ error: msg });
    // 3000: a code of our own (4xxx are the server's); the close path then reconnects with backoff.
    if (this.ws === ws) ws.close(3000, "client: bad frame");
  }

  private sessionEnded(code: number | null): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    this.inflight = null;
    this.setState({ online: false, connecting: false, downloading: null, uploading: false, caughtUp: false });
    void code;
  }

  private retryLater(atLeast: number): void {
    if (!this.running) return;
    const wait = this.backoff.delay(this.attempt++, atLeast);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, wait * 1000);
  }

  private async onClosed(code: number, reason: string): Promise<void> {
    this.sessionEnded(code);
    if (!this.running) return;
    if (code === CLOSE.REVOKED) {
      // Renewing or reconnecting cannot help: the refresh token is revoked too.
      this.running = false;
      this.o.auth.signOut?.();
      this.setState({ signedOut: true, error: reason || "signed out: sign in again" });
      return;
    }
    if (REFUSALS.has(code)) {
      if (code === CLOSE.NO_PROFILE) await this.o.replica.forgetAll(); // keep pending changes
      this.running = false;
      this.setState({ refused: true, error: reason || `refused (${code})` });
      return;
    }
    if (code === CLOSE.UNAUTHENTICATED && !this.renewed && this.o.auth.renew) {
      this.renewed = true; // renew the token and resume at once, from the checkpoint
      try {
        await this.o.auth.renew();
        void this.connect();
        return;
      } catch (e) {
        this.setState({ error: `token renewal failed: ${(e as Error).message}` });
      }
    } else {
      this.renewed = false;
    }
    if (code === 3000) {
      // we closed it ourselves after a bad frame: the error already says why
    } else if (code !== 1000 && reason) this.setState({ error: reason });
    else if (code === 1006 || code === 0) this.setState({ error: "connection lost" });
    this.retryLater(retryAfterFromReason(reason));
  }

  private send(ws: WebSocket, frame: ClientFrame): void {
    if (ws.readyState === 1) ws.send(encode(frame));
  }

  /** Send the next batch of the outbox if none is in flight. */
  async flush(): Promise<void> {
    const ws = this.ws;
    if (!ws || !this.welcomed || this.inflight !== null) {
      this.setState({});
      return;
    }
    this.inflight = "?"; // reserved while the batch is built
    const batch = await this.o.replica.nextBatch(this.maxChanges);
    if (this.ws !== ws || batch === null) {
      this.inflight = null;
      this.setState({ uploading: false });
      return;
    }
    this.inflight = batch.batch_id;
    this.setState({ uploading: true });
    this.send(ws, batch);
  }

  private scheduleRenewal(ws: WebSocket): void {
    const at = this.o.auth.expiresAt?.();
    if (!at || !this.o.auth.renew) return;
    const inMs = Math.max(1000, at - Date.now() - 30_000);
    this.renewTimer = setTimeout(async () => {
      try {
        const token = await this.o.auth.renew!();
        if (this.ws === ws) {
          this.send(ws, { type: "auth", token });
          this.scheduleRenewal(ws);
        }
      } catch {
        // The server closes with 4001 when the old token runs out; the close path renews again.
      }
    }, inMs);
  }

  /** Buckets this client asked the server to re-send because their checksums disagreed. */
  refetched: string[] = [];

  private async checkpointed(ws: WebSocket, bad: string[]): Promise<void> {
    if (bad.length) {
      this.refetched.push(...bad);
      this.send(ws, { type: "refetch", buckets: bad });
      return;
    }
    this.attempt = 0;
    this.setState({ caughtUp: true, downloading: null, error: null });
  }

  private async onFrame(ws: WebSocket, raw: string): Promise<void> {
    if (this.ws !== ws) return;
    let f: ServerFrame;
    try {
      f = decodeServer(raw);
    } catch (e) {
      // A frame type of a newer server: not for us. Anything else malformed ends the session.
      if (e instanceof FrameError && e.code === ERR.UNKNOWN_TYPE) return;
      throw e;
    }
    const r = this.o.replica;
    switch (f.type) {
      case "ops": {
        if (!f.checkpoint) this.setState({ downloading: { done: f.done, total: f.total }, caughtUp: false });
        const [, bad] = r.applyFrameNow(f.ops, f.resume, f.checkpoint);
        if (f.checkpoint) await this.checkpointed(ws, bad);
        return;
      }
      case "checkpoint":
        return this.checkpointed(ws, r.checkpointNow(f));
      case "result": {
        const problems = await r.applyResult(f);
        if (f.batch_id === this.inflight) this.inflight = null;
        if (problems.length) this.o.onProblems?.();
        this.setState({ uploading: false });
        return this.flush();
      }
      case "welcome":
        this.maxChanges = Number(f.limits.max_changes ?? this.maxChanges);
        this.welcomed = true;
        this.renewed = false;
        this.setState({ online: true, connecting: false, error: null });
        await r.holdBuckets(f.buckets);
        this.scheduleRenewal(ws);
        return this.flush(); // reconnecting alone flushes the outbox
      case "metadata":
        return r.setMetadata(f.entities);
      case "drop":
      case "reset":
        return r.forgetBuckets(f.buckets);
      case "ping":
        return this.send(ws, { type: "pong", t: f.t });
      case "pong":
        return;
      case "error":
        return this.onError(f);
    }
  }

  private onError(f: ErrorFrame): void {
    this.setState({ error: `${f.code}: ${f.message}` });
    // A retriable refusal of our batch (or an unattributed rate limit, which may have swallowed
    // it): keep the batch and resend it, same id, after retry_after.
    if (
      this.inflight !== null &&
      (f.code === ERR.UNAVAILABLE || f.code === ERR.RATE_LIMITED) &&
      (f.ref === undefined || f.ref === this.inflight)
    ) {
      this.inflight = null;
      setTimeout(() => void this.flush(), (f.retry_after ?? 1) * 1000);
    }
  }
}
