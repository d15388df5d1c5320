/**
 * The pluggable persistence interface of the device SDK, and the in-memory store.
 *
 * A store only persists: it loads everything once at open and then commits transactions the
 * replica (replica.ts) builds. Every commit is atomic: after a crash the store holds all of a
 * transaction or none of it. The replica keeps the working set in memory, so queries and live
 * queries never wait on the disk; one contract test suite (test/store_contract.ts) runs against
 * every implementation.
 */
import type { Attributes, ChangeOp, ServerRecord } from "./protocol.js";

/** A server-confirmed record and the buckets holding it (bucket -> op hash, for checksums). */
export interface RecordRow {
  entity: string;
  id: string;
  version: number;
  attributes: Attributes;
  buckets: Record<string, number>;
}

/** One offline change, in order; `batch_id` is set once it was sent (kept until answered). */
export interface OutboxRow {
  seq: number;
  op: ChangeOp;
  entity: string;
  id: string;
  base_version: number | null;
  fields: Attributes;
  batch_id: string | null;
  created_at: number;
}

/** A change the server did not apply: a conflict (with the winning record) or a rejection. */
export interface ConflictRow {
  n: number;
  batch_id: string;
  seq: number;
  entity: string;
  id: string;
  status: "conflict" | "rejected";
  code: string | null;
  message: string | null;
  local: { op: ChangeOp; base_version: number | null; fields: Attributes };
  server: ServerRecord | null;
  at: number;
}

export interface Snapshot {
  records: RecordRow[];
  outbox: OutboxRow[];
  conflicts: ConflictRow[];
  meta: Record<string, unknown>;
}

/** One atomic write. Deletions run before puts of the same kind. */
export interface Tx {
  putRecords: RecordRow[];
  deleteRecords: [string, string][];
  putOutbox: OutboxRow[];
  deleteOutbox: number[];
  putConflicts: ConflictRow[];
  meta: Record<string, unknown>;
  /** Wipe records (before the puts): a server-side reset of everything. */
  clearRecords?: boolean;
}

export function emptyTx(): Tx {
  return { putRecords: [], deleteRecords: [], putOutbox: [], deleteOutbox: [], putConflicts: [], meta: {} };
}

export function txIsEmpty(tx: Tx): boolean {
  return (
    !tx.clearRecords &&
    tx.putRecords.length === 0 &&
    tx.deleteRecords.length === 0 &&
    tx.putOutbox.length === 0 &&
    tx.deleteOutbox.length === 0 &&
    tx.putConflicts.length === 0 &&
    Object.keys(tx.meta).length === 0
  );
}

export interface Store {
  /** Everything the store holds (called once, when the replica opens). */
  load(): Promise<Snapshot>;
  /** Apply one transaction atomically and durably. */
  commit(tx: Tx): Promise<void>;
  /** Forget everything (sign-out). */
  destroy(): Promise<void>;
  close(): void;
}

export const recordKey = (entity: string, id: string): string => `${entity}\u0000${id}`;

const clone = <T>(v: T): T => structuredClone(v);

/** Keeps everything in memory: for tests, and for apps that need no durability. */
export class MemoryStore implements Store {
  private records = new Map<string, RecordRow>();
  private outbox = new Map<number, OutboxRow>();
  private conflicts = new Map<number, ConflictRow>();
  private meta = new Map<string, unknown>();

  async load(): Promise<Snapshot> {
    return clone({
      records: [...this.records.values()],
      outbox: [...this.outbox.values()].sort((a, b) => a.seq - b.seq),
      conflicts: [...this.conflicts.values()].sort((a, b) => a.n - b.n),
      meta: Object.fromEntries(this.meta),
    });
  }

  async commit(tx: Tx): Promise<void> {
    const t = clone(tx); // the caller may keep mutating its objects
    if (t.clearRecords) this.records.clear();
    for (const [e, i] of t.deleteRecords) this.records.delete(recordKey(e, i));
    for (const r of t.putRecords) this.records.set(recordKey(r.entity, r.id), r);
    for (const s of t.deleteOutbox) this.outbox.delete(s);
    for (const o of t.putOutbox) this.outbox.set(o.seq, o);
    for (const c of t.putConflicts) this.conflicts.set(c.n, c);
    for (const [k, v] of Object.entries(t.meta)) {
      if (v === undefined) this.meta.delete(k);
      else this.meta.set(k, v);
    }
  }

  async destroy(): Promise<void> {
    this.records.clear();
    this.outbox.clear();
    this.conflicts.clear();
    this.meta.clear();
  }

  close(): void {}
}
