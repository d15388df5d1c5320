/**
 * The durable browser store: one IndexedDB database per signed-in user and device, four object
 * stores (records keyed by [entity, id], outbox by seq, conflicts by n, meta by key). A replica
 * transaction is one IndexedDB readwrite transaction, so it is atomic across all four.
 */
import type { ConflictRow, OutboxRow, RecordRow, Snapshot, Store, Tx } from "./store.js";

const STORES = ["records", "outbox", "conflicts", "meta"] as const;
const SCHEMA_VERSION = 1;

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
      if (!db.objectStoreNames.contains("records")) db.createObjectStore("records", { keyPath: ["entity", "id"] });
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
    const [records, outbox, conflicts, keys, values] = await Promise.all([
      req(tx.objectStore("records").getAll() as IDBRequest<RecordRow[]>),
      req(tx.objectStore("outbox").getAll() as IDBRequest<OutboxRow[]>),
      req(tx.objectStore("conflicts").getAll() as IDBRequest<ConflictRow[]>),
      req(tx.objectStore("meta").getAllKeys()),
      req(tx.objectStore("meta").getAll()),
    ]);
    const meta: Record<string, unknown> = {};
    keys.forEach((k, i) => (meta[String(k)] = values[i]));
    return { records, outbox, conflicts, meta };
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
    try {
      this.issue(tx, t);
    } catch (e) {
      // A value that cannot be stored throws here, after earlier requests were queued: abort, so
      // none of them commits.
      tx.abort();
      await finished.catch(() => undefined);
      throw e;
    }
    await finished;
  }

  private issue(tx: IDBTransaction, t: Tx): void {
    const records = tx.objectStore("records");
    if (t.clearRecords) records.clear();
    for (const [e, i] of t.deleteRecords) records.delete([e, i]);
    for (const r of t.putRecords) records.put(r);
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
