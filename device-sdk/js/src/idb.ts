/**
 * The durable browser store: one IndexedDB database per signed-in user and device. A replica
 * transaction is one IndexedDB readwrite transaction, so it is atomic across everything.
 *
 * Records are kept as a log of segments: each transaction that touches records appends one row
 * holding all its record puts and deletes, and opening the store replays the log (the latest
 * write of a key wins) and compacts it when it has grown well past the live records. Chromium's
 * IndexedDB pays a large cost per key written: a 2,000-record page written as one row is about
 * 30 times faster than as 2,000 rows (docs/sdk-js.md), and an initial download is all pages.
 * The outbox (keyed by seq), the conflict log (by n) and the meta values are small and keyed.
 */
import { type ConflictRow, type OutboxRow, type RecordRow, recordKey, type Snapshot, type Store, type Tx } from "./store.js";

const STORES = ["segments", "outbox", "conflicts", "meta"] as const;
const SCHEMA_VERSION = 1;
/** Records per segment when the log is rewritten. */
const COMPACT_CHUNK = 5000;

/** One logged write: the records it deleted then put (after wiping all records, if `clear`). */
interface Segment {
  clear?: boolean;
  deletes: [string, string][];
  puts: RecordRow[];
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

export class IndexedDBStore implements Store {
  private db: IDBDatabase | null = null;
  /** The key of the next segment (one past the highest in the log). */
  private nextSegment = 1;
  /** Segments and record entries in the log, to decide when to compact. */
  segmentCount = 0;

  /** `factory` defaults to the global indexedDB (pass fake-indexeddb's in node tests). */
  constructor(
    readonly name: string,
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {}

  private async open(): Promise<IDBDatabase> {
    if (this.db) return this.db;
    const r = this.factory.open(this.name, SCHEMA_VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      if (!db.objectStoreNames.contains("segments")) db.createObjectStore("segments");
      if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "seq" });
      if (!db.objectStoreNames.contains("conflicts")) db.createObjectStore("conflicts", { keyPath: "n" });
      if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta");
    };
    this.db = await req(r);
    return this.db;
  }

  async load(): Promise<Snapshot> {
    const db = await this.open();
    const tx = db.transaction([...STORES], "readonly");
    const [segKeys, segments, outbox, conflicts, keys, values] = await Promise.all([
      req(tx.objectStore("segments").getAllKeys()),
      req(tx.objectStore("segments").getAll() as IDBRequest<Segment[]>),
      req(tx.objectStore("outbox").getAll() as IDBRequest<OutboxRow[]>),
      req(tx.objectStore("conflicts").getAll() as IDBRequest<ConflictRow[]>),
      req(tx.objectStore("meta").getAllKeys()),
      req(tx.objectStore("meta").getAll()),
    ]);
    const records = new Map<string, RecordRow>();
    let entries = 0;
    for (const seg of segments) {
      if (seg.clear) records.clear();
      for (const [e, i] of seg.deletes) records.delete(recordKey(e, i));
      for (const r of seg.puts) records.set(recordKey(r.entity, r.id), r);
      entries += seg.deletes.length + seg.puts.length;
    }
    this.nextSegment = segKeys.length ? Number(segKeys[segKeys.length - 1]) + 1 : 1;
    this.segmentCount = segKeys.length;
    const meta: Record<string, unknown> = {};
    keys.forEach((k, i) => (meta[String(k)] = values[i]));
    const live = [...records.values()];
    if (this.segmentCount > 64 && entries > 2 * live.length + COMPACT_CHUNK) await this.compact(live);
    return { records: live, outbox, conflicts, meta };
  }

  /** Rewrite the log as a few segments holding exactly the live records (one transaction). */
  private async compact(live: RecordRow[]): Promise<void> {
    const db = await this.open();
    const tx = db.transaction(["segments"], "readwrite");
    const finished = done(tx);
    const store = tx.objectStore("segments");
    store.clear();
    let key = 1;
    for (let i = 0; i < live.length; i += COMPACT_CHUNK) {
      const seg: Segment = { deletes: [], puts: live.slice(i, i + COMPACT_CHUNK) };
      store.put(seg, key++);
    }
    await finished;
    this.nextSegment = key;
    this.segmentCount = key - 1;
  }

  async commit(t: Tx): Promise<void> {
    const db = await this.open();
    // Offline edits must survive a power cut once create() resolved; a page of server data lost
    // that way is lost whole (with its cursor) and simply downloaded again.
    const local = t.putOutbox.length > 0 || t.deleteOutbox.length > 0 || t.putConflicts.length > 0;
    const tx = db.transaction([...STORES], "readwrite", {
      durability: local ? "strict" : "relaxed",
    } as IDBTransactionOptions);
    const finished = done(tx);
    const segment = this.nextSegment;
    try {
      this.issue(tx, t, segment);
    } catch (e) {
      // A value that cannot be stored throws here, after earlier requests were queued: abort, so
      // none of them commits.
      tx.abort();
      await finished.catch(() => undefined);
      throw e;
    }
    await finished;
  }

  private issue(tx: IDBTransaction, t: Tx, segment: number): void {
    if (t.clearRecords || t.putRecords.length || t.deleteRecords.length) {
      const seg: Segment = { deletes: t.deleteRecords, puts: t.putRecords };
      if (t.clearRecords) seg.clear = true;
      tx.objectStore("segments").put(seg, segment);
      // Claimed now (commits are issued in order): a failed commit leaves a gap, which is harmless.
      this.nextSegment = segment + 1;
      this.segmentCount++;
    }
    const outbox = tx.objectStore("outbox");
    for (const s of t.deleteOutbox) outbox.delete(s);
    for (const o of t.putOutbox) outbox.put(o);
    const conflicts = tx.objectStore("conflicts");
    for (const c of t.putConflicts) conflicts.put(c);
    const meta = tx.objectStore("meta");
    for (const [k, v] of Object.entries(t.meta)) {
      if (v === undefined) meta.delete(k);
      else meta.put(v, k);
    }
  }

  async destroy(): Promise<void> {
    this.close();
    await req(this.factory.deleteDatabase(this.name));
  }

  close(): void {
    this.db?.close();
    this.db = null;
  }
}
