/**
 * The API for app developers: `Offsync.open()` gives a local database that syncs itself.
 * `query` and `watch` read the replica in memory (a watch re-runs when synced or local changes
 * touch its entity), `create`/`update`/`delete` validate against the entity metadata and go to
 * the durable outbox, `status` says what the sync is doing, `conflicts` what the server decided.
 */
import { Backoff } from "./backoff.js";
import { SyncClient, type SyncState, type TokenSource } from "./client.js";
import type { Attributes, EntityMeta } from "./protocol.js";
import { Replica } from "./replica.js";
import type { ConflictRow, Store } from "./store.js";
import { normalizeFields, ValidationError } from "./validate.js";

/** A record as the app sees it: the server's copy with pending offline changes laid on top. */
export interface Row {
  entity: string;
  id: string;
  attributes: Attributes;
  /** The server version this copy is based on; null for a record created offline. */
  version: number | null;
  /** Offline changes to it are waiting to be uploaded. */
  pending: boolean;
}

export interface Filter {
  /** Attribute equality (all must match). */
  where?: Attributes;
  /** Case-insensitive substring over every string attribute. */
  search?: string;
  /** Keep rows for which this returns true. */
  predicate?: (row: Row) => boolean;
  orderBy?: string;
  descending?: boolean;
  limit?: number;
}

export interface Status extends SyncState {
  /** Offline changes not yet answered by the server. */
  pending: number;
  /** When the device last reached a checkpoint (ms since the epoch), or null. */
  lastSynced: number | null;
  conflicts: number;
}

export interface OpenOptions {
  /** ws(s)://host/v1/sync */
  url: string;
  store: Store;
  auth: TokenSource;
  /** Use this device id (e.g. the one the token was issued for). */
  deviceId?: string;
  /** Check edits against the entity metadata before they reach the outbox (default true). */
  validate?: boolean;
  backoff?: Backoff;
  WebSocket?: new (url: string) => WebSocket;
}

export type Unsubscribe = () => void;

/** A watch re-runs at most this often while changes keep coming (once per display frame). */
export const WATCH_INTERVAL_MS = 16;

export class Offsync {
  readonly client: SyncClient;
  private statusListeners = new Set<(s: Status) => void>();
  private readonly validateEdits: boolean;

  private constructor(
    readonly replica: Replica,
    opts: OpenOptions,
  ) {
    this.validateEdits = opts.validate ?? true;
    this.client = new SyncClient({
      url: opts.url,
      replica,
      auth: opts.auth,
      backoff: opts.backoff,
      WebSocket: opts.WebSocket,
      onState: () => this.emitStatus(),
      onProblems: () => this.emitStatus(),
    });
    replica.subscribe(() => this.emitStatus());
  }

  /** Open the local database (instant, offline) and return it; call `start()` to sync. */
  static async open(opts: OpenOptions): Promise<Offsync> {
    const replica = await Replica.open(opts.store, opts.deviceId);
    return new Offsync(replica, opts);
  }

  /** Stay connected and keep syncing (live). */
  start(): void {
    this.client.start();
  }

  /** Disconnect; local reads and edits keep working. */
  stop(): void {
    this.client.stop();
  }

  /** Resolves once caught up with the server, every offline change was answered, and the store
   * holds all of it (the checkpoint included): what `synced()` promises survives a reload. */
  async synced(): Promise<void> {
    await this.client.synced();
    // Downloaded pages are written behind the frames (applyFrameNow); memory is ahead of the
    // disk until this resolves.
    await this.replica.flushed();
  }

  close(): void {
    this.client.stop();
    this.replica.store.close();
  }

  // ---------------------------------------------------------------------- reads ----
  get(entity: string, id: string): Row | null {
    const attrs = this.replica.get(entity, id);
    return attrs === null ? null : this.row(entity, id, attrs);
  }

  private row(entity: string, id: string, attributes: Attributes): Row {
    return {
      entity,
      id,
      attributes,
      version: this.replica.serverRecord(entity, id)?.version ?? null,
      pending: this.replica.pendingFor(entity, id).length > 0,
    };
  }

  query(entity: string, filter: Filter = {}): Row[] {
    const needle = filter.search?.trim().toLowerCase();
    const where = filter.where ? Object.entries(filter.where) : [];
    const out: Row[] = [];
    for (const [id, attrs] of this.replica.list(entity)) {
      if (where.length && !where.every(([k, v]) => attrs[k] === v)) continue;
      if (needle && !Object.values(attrs).some((v) => typeof v === "string" && v.toLowerCase().includes(needle))) continue;
      const row = this.row(entity, id, attrs);
      if (filter.predicate && !filter.predicate(row)) continue;
      out.push(row);
    }
    if (filter.orderBy) {
      const k = filter.orderBy;
      const dir = filter.descending ? -1 : 1;
      out.sort((a, b) => {
        const x = a.attributes[k] as string | number | undefined;
        const y = b.attributes[k] as string | number | undefined;
        if (x === y) return 0;
        if (x === undefined || x === null) return 1;
        if (y === undefined || y === null) return -1;
        if (typeof x === "string" && typeof y === "string") return x.localeCompare(y) * dir;
        return (x < y ? -1 : 1) * dir;
      });
    }
    return filter.limit !== undefined ? out.slice(0, filter.limit) : out;
  }

  /** Call `callback` with the query's rows now and whenever synced or local changes touch the
   * entity: at once for a lone change, and at most once per `WATCH_INTERVAL_MS` during a burst
   * (a 100,000-record download re-runs a query a few dozen times, not once per page). */
  watch(entity: string, filter: Filter, callback: (rows: Row[]) => void): Unsubscribe {
    let queued = false;
    let last = 0;
    let closed = false;
    const run = () => {
      queued = false;
      if (closed) return;
      last = performance.now();
      callback(this.query(entity, filter));
    };
    const off = this.replica.subscribe((entities) => {
      if (!entities.has(entity) || queued) return;
      queued = true;
      const wait = last + WATCH_INTERVAL_MS - performance.now();
      if (wait <= 0) queueMicrotask(run);
      else setTimeout(run, wait);
    });
    run();
    return () => {
      closed = true;
      off();
    };
  }

  /** The entities of the user's profile with their attributes (arrives with the download). */
  entities(): EntityMeta[] {
    return this.replica.metadata;
  }

  entity(name: string): EntityMeta | undefined {
    return this.replica.metadata.find((e) => e.name === name);
  }

  // ---------------------------------------------------------------------- edits ----
  /** The fields in the form the server stores them (a date-time in UTC, say), or ValidationError. */
  private check(entity: string, fields: Attributes, creating: boolean): Attributes {
    if (!this.validateEdits) return fields;
    const meta = this.entity(entity);
    if (!meta) return fields; // no metadata yet (older server): the server validates
    const [problem, stored] = normalizeFields(meta, fields, creating);
    if (problem) throw new ValidationError(entity, problem.field, problem.message);
    return stored;
  }

  /** Create a record offline; returns its (client-generated) id. Throws ValidationError. */
  async create(entity: string, fields: Attributes): Promise<string> {
    return this.replica.create(entity, this.check(entity, fields, true));
  }

  /** Change some attributes offline. Throws ValidationError. */
  async update(entity: string, id: string, fields: Attributes): Promise<void> {
    return this.replica.update(entity, id, this.check(entity, fields, false));
  }

  delete(entity: string, id: string): Promise<void> {
    return this.replica.delete(entity, id);
  }

  // ----------------------------------------------------------- status, conflicts ----
  conflicts(): readonly ConflictRow[] {
    return this.replica.conflicts();
  }

  get status(): Status {
    return {
      ...this.client.state,
      pending: this.replica.pending().length,
      lastSynced: this.replica.lastSynced,
      conflicts: this.replica.conflicts().length,
    };
  }

  onStatus(listener: (s: Status) => void): Unsubscribe {
    this.statusListeners.add(listener);
    listener(this.status);
    return () => this.statusListeners.delete(listener);
  }

  private emitStatus(): void {
    if (!this.statusListeners.size) return;
    const s = this.status;
    for (const l of [...this.statusListeners]) l(s);
  }
}
