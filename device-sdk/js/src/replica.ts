/**
 * The device's local replica: server records with their bucket membership and per-bucket sums,
 * the cursor, the outbox of offline changes and the log of conflicts and rejections, held in
 * memory and written through to a Store one atomic transaction per operation.
 *
 * The same rules as the Python SDK's LocalStore (device-sdk/offsync_device/local_store.py): what the
 * user sees is the server record with pending changes laid on top, so a download never
 * overwrites an offline edit and dropping server data never drops a pending change.
 */
import { combine, MOD, opHash } from "./checksum.js";
import type { Attributes, Change, ChangeResult, Checkpoint, EntityMeta, OpRow, Result, Upload } from "./protocol.js";
import { type ConflictRow, emptyTx, type OutboxRow, type RecordRow, recordKey, type Store, type Tx, txIsEmpty } from "./store.js";

export type Listener = (entities: ReadonlySet<string>) => void;

function uuid(): string {
  return globalThis.crypto.randomUUID();
}

export class Replica {
  readonly records = new Map<string, RecordRow>();
  /** entity -> ids of server records (for queries without scanning every entity). */
  private byEntity = new Map<string, Set<string>>();
  private outbox: OutboxRow[] = [];
  private pendingBy = new Map<string, OutboxRow[]>();
  private conflictRows: ConflictRow[] = [];
  private sums: Record<string, number> = {};
  private held = new Set<string>();
  cursor = 0;
  deviceId = "";
  metadata: EntityMeta[] = [];
  lastSynced: number | null = null;
  private nextSeq = 1;
  private nextConflict = 1;
  private chain: Promise<void> = Promise.resolve();
  private listeners = new Set<Listener>();
  /** Called after every local edit (the client flushes the outbox). */
  onLocalChange: (() => void) | null = null;

  private constructor(readonly store: Store) {}

  static async open(store: Store, deviceId?: string): Promise<Replica> {
    const r = new Replica(store);
    await r.reload();
    if (!r.deviceId || (deviceId && deviceId !== r.deviceId)) {
      r.deviceId = deviceId ?? uuid();
      await r.write({ ...emptyTx(), meta: { device_id: r.deviceId } });
    }
    return r;
  }

  private async reload(): Promise<void> {
    const snap = await this.store.load();
    this.records.clear();
    this.byEntity.clear();
    for (const rec of snap.records) this.setRecord(rec);
    this.outbox = snap.outbox.sort((a, b) => a.seq - b.seq);
    this.reindexOutbox();
    this.conflictRows = snap.conflicts.sort((a, b) => a.n - b.n);
    const m = snap.meta;
    this.cursor = Number(m.cursor ?? 0);
    this.deviceId = String(m.device_id ?? "");
    this.sums = { ...((m.sums as Record<string, number>) ?? {}) };
    this.held = new Set((m.held as string[]) ?? []);
    this.metadata = (m.metadata as EntityMeta[]) ?? [];
    this.lastSynced = (m.last_synced as number | undefined) ?? null;
    this.nextSeq = Math.max(Number(m.next_seq ?? 1), ...this.outbox.map((o) => o.seq + 1));
    this.nextConflict = Math.max(1, ...this.conflictRows.map((c) => c.n + 1));
  }

  // ------------------------------------------------------------------ plumbing ----
  /** Commits in order; if the store fails, memory is reloaded from it so the two never differ. */
  private write(tx: Tx): Promise<void> {
    if (txIsEmpty(tx)) return this.chain;
    // The commit may run after later frames changed these objects in memory: it must write them
    // as they are now, with the cursor and sums of this same transaction.
    tx.putRecords = tx.putRecords.map((r) => ({ ...r, buckets: { ...r.buckets } }));
    tx.putOutbox = tx.putOutbox.map((o) => ({ ...o }));
    const p = this.chain.then(() => this.store.commit(tx));
    this.chain = p.catch(async () => {
      await this.reload();
      this.emit(new Set(this.byEntity.keys()));
    });
    return p;
  }

  /** Resolves when every transaction started so far is durable. */
  flushed(): Promise<void> {
    return this.chain;
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private emit(entities: Set<string>): void {
    if (entities.size === 0) return;
    for (const l of [...this.listeners]) l(entities);
  }

  private setRecord(rec: RecordRow): void {
    this.records.set(recordKey(rec.entity, rec.id), rec);
    let ids = this.byEntity.get(rec.entity);
    if (!ids) this.byEntity.set(rec.entity, (ids = new Set()));
    ids.add(rec.id);
  }

  private deleteRecord(entity: string, id: string): void {
    this.records.delete(recordKey(entity, id));
    this.byEntity.get(entity)?.delete(id);
  }

  private reindexOutbox(): void {
    this.pendingBy.clear();
    for (const o of this.outbox) {
      const k = recordKey(o.entity, o.id);
      const list = this.pendingBy.get(k);
      if (list) list.push(o);
      else this.pendingBy.set(k, [o]);
    }
  }

  private sumsMeta(): Record<string, unknown> {
    return { sums: { ...this.sums }, held: [...this.held].sort(), cursor: this.cursor };
  }

  // ------------------------------------------------------------------ download ----
  /** Remember the session's buckets, so a resumed download names them in its hello. */
  holdBuckets(buckets: Iterable<string>): Promise<void> {
    let changed = false;
    for (const b of buckets) {
      if (!this.held.has(b)) {
        this.held.add(b);
        changed = true;
      }
    }
    return changed ? this.write({ ...emptyTx(), meta: this.sumsMeta() }) : this.chain;
  }

  /** Store one ops frame (and verify the checkpoint riding along) in one transaction.
   * Returns [ops applied, buckets whose checksum disagrees]. */
  async applyFrame(ops: OpRow[], resume?: number, checkpoint?: Checkpoint): Promise<[number, string[]]> {
    const out = this.applyFrameNow(ops, resume, checkpoint);
    await this.flushed();
    return out;
  }

  /** applyFrame without waiting for the disk: memory (what queries see) is updated and the
   * transaction queued behind the earlier ones, so a download decodes the next page while the
   * store writes this one. Transactions commit in order, each with its cursor, so whatever a
   * crash keeps is a consistent prefix; a failed commit reloads memory from the store. */
  applyFrameNow(ops: OpRow[], resume?: number, checkpoint?: Checkpoint): [number, string[]] {
    const touched = new Map<string, RecordRow>();
    const gone: [string, string][] = [];
    const entities = new Set<string>();
    for (const [, bucket, op, entity, id, version, attrs] of ops) {
      const k = recordKey(entity, id);
      let rec = this.records.get(k);
      entities.add(entity);
      if (op === "put") {
        const h = opHash(entity, id, version);
        if (!rec) {
          rec = { entity, id, version, attributes: attrs ?? {}, buckets: {} };
          this.setRecord(rec);
        } else if (version >= rec.version) {
          // A record may already be newer locally (a batch result arrived first).
          rec.version = version;
          rec.attributes = attrs ?? {};
        }
        const old = rec.buckets[bucket];
        this.sums[bucket] = combine(this.sums[bucket] ?? 0, h, old ?? 0);
        rec.buckets[bucket] = h;
        touched.set(k, rec);
      } else if (rec && bucket in rec.buckets) {
        this.sums[bucket] = combine(this.sums[bucket] ?? 0, 0, rec.buckets[bucket]);
        delete rec.buckets[bucket];
        if (Object.keys(rec.buckets).length === 0) {
          this.deleteRecord(entity, id);
          touched.delete(k);
          gone.push([entity, id]);
        } else {
          touched.set(k, rec);
        }
      }
    }
    if (resume !== undefined && resume > this.cursor) this.cursor = resume;
    const bad = checkpoint ? this.verify(checkpoint) : [];
    const tx = { ...emptyTx(), putRecords: [...touched.values()], deleteRecords: gone, meta: this.sumsMeta() };
    this.write(tx).catch(() => undefined); // a failure reloads memory (write); flushed() reports it
    this.emit(entities);
    return [ops.length, bad];
  }

  /** Verify a checkpoint's checksums; store its cursor if they agree. Returns the buckets that disagree. */
  async checkpoint(cp: Checkpoint): Promise<string[]> {
    const bad = this.checkpointNow(cp);
    await this.flushed();
    return bad;
  }

  /** checkpoint without waiting for the disk, as applyFrameNow: the cursor is queued behind the
   * pages before it, so a frame arriving next is not held up by an IndexedDB commit. */
  checkpointNow(cp: Checkpoint): string[] {
    const bad = this.verify(cp);
    this.write({ ...emptyTx(), meta: this.sumsMeta() }).catch(() => undefined); // flushed() reports it
    return bad;
  }

  private verify(cp: Checkpoint): string[] {
    const bad = Object.entries(cp.checksums)
      .filter(([b, c]) => (this.sums[b] ?? 0) % MOD !== c)
      .map(([b]) => b)
      .sort();
    if (bad.length) return bad;
    this.held = new Set(Object.keys(cp.checksums));
    this.cursor = cp.cursor;
    this.lastSynced = Date.now();
    return [];
  }

  /** What the hello reports: the held buckets with what is actually held. */
  heldChecksums(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const b of [...this.held].sort()) out[b] = (this.sums[b] ?? 0) % MOD;
    return out;
  }

  /** The user lost these buckets (drop) or they are re-sent from scratch (reset): forget their
   * membership, and records no bucket holds any more. Pending changes are untouched. */
  async forgetBuckets(buckets: string[]): Promise<void> {
    const bs = new Set(buckets);
    const put: RecordRow[] = [];
    const gone: [string, string][] = [];
    const entities = new Set<string>();
    for (const rec of [...this.records.values()]) {
      let hit = false;
      for (const b of Object.keys(rec.buckets)) {
        if (bs.has(b)) {
          delete rec.buckets[b];
          hit = true;
        }
      }
      if (!hit) continue;
      entities.add(rec.entity);
      if (Object.keys(rec.buckets).length === 0) {
        this.deleteRecord(rec.entity, rec.id);
        gone.push([rec.entity, rec.id]);
      } else {
        put.push(rec);
      }
    }
    for (const b of bs) {
      delete this.sums[b];
      this.held.delete(b);
    }
    const written = this.write({ ...emptyTx(), putRecords: put, deleteRecords: gone, meta: this.sumsMeta() });
    this.emit(entities);
    await written;
  }

  /** The server took the profile away: drop every server record and the cursor; the outbox stays. */
  async forgetAll(): Promise<void> {
    const entities = new Set(this.byEntity.keys());
    this.records.clear();
    this.byEntity.clear();
    this.sums = {};
    this.held.clear();
    this.cursor = 0;
    const written = this.write({ ...emptyTx(), clearRecords: true, meta: this.sumsMeta() });
    this.emit(entities);
    await written;
  }

  async setMetadata(entities: EntityMeta[]): Promise<void> {
    this.metadata = entities;
    const written = this.write({ ...emptyTx(), meta: { metadata: entities } });
    this.emit(new Set(entities.map((e) => e.name)));
    await written;
  }

  // ------------------------------------------------------------------- reading ----
  serverRecord(entity: string, id: string): RecordRow | undefined {
    return this.records.get(recordKey(entity, id));
  }

  /** The record as the user sees it: the server's state with pending changes applied. */
  get(entity: string, id: string): Attributes | null {
    const base = this.records.get(recordKey(entity, id));
    let attrs: Attributes | null = base ? { ...base.attributes } : null;
    for (const ch of this.pendingBy.get(recordKey(entity, id)) ?? []) {
      if (ch.op === "create") attrs = { ...ch.fields };
      else if (ch.op === "update") attrs = { ...(attrs ?? {}), ...ch.fields };
      else attrs = null;
    }
    return attrs;
  }

  /** Every visible record of an entity, server records first (in arrival order), then local creates. */
  list(entity: string): [string, Attributes][] {
    const ids = [...(this.byEntity.get(entity) ?? [])];
    for (const o of this.outbox) if (o.entity === entity && o.op === "create") ids.push(o.id);
    const out: [string, Attributes][] = [];
    for (const id of new Set(ids)) {
      const rec = this.get(entity, id);
      if (rec !== null) out.push([id, rec]);
    }
    return out;
  }

  count(entity?: string): number {
    if (entity === undefined) return this.records.size;
    return this.byEntity.get(entity)?.size ?? 0;
  }

  entities(): string[] {
    return [...new Set([...this.byEntity.keys(), ...this.metadata.map((e) => e.name)])].sort();
  }

  pending(): readonly OutboxRow[] {
    return this.outbox;
  }

  pendingFor(entity: string, id: string): readonly OutboxRow[] {
    return this.pendingBy.get(recordKey(entity, id)) ?? [];
  }

  hasPending(): boolean {
    return this.outbox.length > 0;
  }

  conflicts(): readonly ConflictRow[] {
    return this.conflictRows;
  }

  // ----------------------------------------------------------- offline changes ----
  private localChanged(entity: string): void {
    this.emit(new Set([entity]));
    this.onLocalChange?.();
  }

  private newRow(op: OutboxRow["op"], entity: string, id: string, base: number | null, fields: Attributes): OutboxRow {
    return { seq: this.nextSeq++, op, entity, id, base_version: base, fields, batch_id: null, created_at: Date.now() };
  }

  private pushRow(row: OutboxRow): void {
    this.outbox.push(row);
    const k = recordKey(row.entity, row.id);
    const list = this.pendingBy.get(k);
    if (list) list.push(row);
    else this.pendingBy.set(k, [row]);
  }

  private removeRows(seqs: Set<number>): void {
    this.outbox = this.outbox.filter((o) => !seqs.has(o.seq));
    this.reindexOutbox();
  }

  /** An offline create with a client-generated id (a retry can never duplicate it). */
  async create(entity: string, fields: Attributes, id: string = uuid()): Promise<string> {
    const row = this.newRow("create", entity, id, null, { ...fields });
    this.pushRow(row);
    const p = this.write({ ...emptyTx(), putOutbox: [row], meta: { next_seq: this.nextSeq } });
    this.localChanged(entity);
    await p;
    return id;
  }

  /** An offline update. Consecutive unsent updates of one record merge into one change (later
   * values win per field), so quick successive edits lose nothing. */
  async update(entity: string, id: string, fields: Attributes): Promise<void> {
    const rows = this.pendingFor(entity, id);
    const last = rows[rows.length - 1];
    let row: OutboxRow;
    if (last && last.batch_id === null && (last.op === "create" || last.op === "update")) {
      last.fields = { ...last.fields, ...fields };
      row = last;
    } else {
      if (last && last.op === "delete") throw new Error(`${entity} ${id} is deleted locally`);
      const base = this.serverRecord(entity, id)?.version ?? null;
      if (base === null && !last) throw new Error(`no ${entity} ${id} in the local store`);
      row = this.newRow("update", entity, id, base, { ...fields });
      this.pushRow(row);
    }
    const p = this.write({ ...emptyTx(), putOutbox: [row], meta: { next_seq: this.nextSeq } });
    this.localChanged(entity);
    await p;
  }

  async delete(entity: string, id: string): Promise<void> {
    const rows = this.pendingFor(entity, id);
    const unsent = rows.filter((r) => r.batch_id === null);
    const sent = rows.some((r) => r.batch_id !== null);
    const tx = emptyTx();
    if (unsent.length && unsent[0].op === "create" && !sent) {
      // Never reached the server: forgetting the create is the whole delete.
      tx.deleteOutbox = rows.map((r) => r.seq);
      this.removeRows(new Set(tx.deleteOutbox));
    } else {
      if (!this.serverRecord(entity, id) && !rows.length) throw new Error(`no ${entity} ${id} in the local store`);
      tx.deleteOutbox = unsent.filter((r) => r.op === "update").map((r) => r.seq);
      this.removeRows(new Set(tx.deleteOutbox));
      const row = this.newRow("delete", entity, id, this.serverRecord(entity, id)?.version ?? null, {});
      this.pushRow(row);
      tx.putOutbox = [row];
      tx.meta = { next_seq: this.nextSeq };
    }
    const p = this.write(tx);
    this.localChanged(entity);
    await p;
  }

  /** The batch to send: the one already in flight (resent with the same id, so the server
   * applies it once), else the oldest unsent changes under a new batch id. */
  async nextBatch(maxChanges: number): Promise<Upload | null> {
    let batchId = this.outbox.find((o) => o.batch_id !== null)?.batch_id ?? null;
    if (batchId === null) {
      const rows = this.outbox.filter((o) => o.batch_id === null).slice(0, maxChanges);
      if (!rows.length) return null;
      batchId = uuid();
      for (const r of rows) r.batch_id = batchId;
      await this.write({ ...emptyTx(), putOutbox: rows });
    }
    const rows = this.outbox.filter((o) => o.batch_id === batchId);
    const changes: Change[] = rows.map((c, i) => ({
      seq: i,
      op: c.op,
      entity: c.entity,
      id: c.id,
      base_version: c.base_version,
      fields: c.fields,
    }));
    return { type: "upload", batch_id: batchId, changes };
  }

  /** Apply the server's answer to a batch; returns the conflicts and rejections. */
  async applyResult(result: Result): Promise<ChangeResult[]> {
    const rows = this.outbox.filter((o) => o.batch_id === result.batch_id);
    if (!rows.length) return []; // an answer already applied (delivered twice)
    const bySeq = new Map(result.results.map((r) => [r.seq, r]));
    const problems: ChangeResult[] = [];
    const tx = emptyTx();
    const done = new Set<number>();
    const entities = new Set<string>();
    const putRecs = new Map<string, RecordRow>();
    rows.forEach((ch, i) => {
      const res = bySeq.get(i);
      if (!res) return;
      entities.add(ch.entity);
      done.add(ch.seq);
      if (res.status === "applied") this.applied(ch, res, tx, putRecs);
      else {
        problems.push(res);
        this.problem(result.batch_id, i, ch, res, tx, putRecs);
      }
    });
    this.removeRows(done);
    tx.deleteOutbox = [...done];
    tx.putRecords = [...putRecs.values()];
    const written = this.write(tx);
    this.emit(entities); // what queries and the status show changed now, not after the disk
    await written;
    return problems;
  }

  private applied(ch: OutboxRow, res: ChangeResult, tx: Tx, put: Map<string, RecordRow>): void {
    const k = recordKey(ch.entity, ch.id);
    if (ch.op === "delete") {
      this.deleteRecord(ch.entity, ch.id);
      put.delete(k);
      tx.deleteRecords.push([ch.entity, ch.id]);
      return;
    }
    if (res.version === undefined || res.version === null) return;
    const old = this.records.get(k);
    const attrs = ch.op === "create" || !old ? { ...ch.fields } : { ...old.attributes, ...ch.fields };
    if (!old) {
      const rec: RecordRow = { entity: ch.entity, id: ch.id, version: res.version, attributes: attrs, buckets: {} };
      this.setRecord(rec);
      put.set(k, rec);
    } else if (res.version >= old.version) {
      old.version = res.version;
      old.attributes = attrs;
      put.set(k, old);
    }
    // Later unsent edits of this record were made on top of this change.
    for (const later of this.pendingFor(ch.entity, ch.id)) {
      if (later.seq > ch.seq && (later.base_version === null || later.base_version === ch.base_version)) {
        later.base_version = res.version;
        tx.putOutbox.push(later);
      }
    }
  }

  private problem(batchId: string, seq: number, ch: OutboxRow, res: ChangeResult, tx: Tx, put: Map<string, RecordRow>): void {
    const row: ConflictRow = {
      n: this.nextConflict++,
      batch_id: batchId,
      seq,
      entity: ch.entity,
      id: ch.id,
      status: res.status === "conflict" ? "conflict" : "rejected",
      code: res.code ?? null,
      message: res.message ?? null,
      local: { op: ch.op, base_version: ch.base_version, fields: ch.fields },
      server: res.record ?? null,
      at: Date.now(),
    };
    this.conflictRows.push(row);
    tx.putConflicts.push(row);
    const rec = res.record;
    if (res.status === "conflict" && rec && rec.version !== undefined && rec.version !== null) {
      // The server's winning record replaces ours.
      const k = recordKey(ch.entity, ch.id);
      const old = this.records.get(k);
      if (rec.deleted) {
        this.deleteRecord(ch.entity, ch.id);
        put.delete(k);
        tx.deleteRecords.push([ch.entity, ch.id]);
      } else if (!old) {
        const r: RecordRow = { entity: ch.entity, id: ch.id, version: rec.version, attributes: { ...(rec.attributes ?? {}) }, buckets: {} };
        this.setRecord(r);
        put.set(k, r);
      } else if (rec.version >= old.version) {
        old.version = rec.version;
        old.attributes = { ...(rec.attributes ?? {}) };
        put.set(k, old);
      }
    }
  }
}
