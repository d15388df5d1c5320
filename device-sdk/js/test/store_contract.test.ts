/** The contract every Store passes (store.ts): what is committed is loaded back, a failed commit
 * leaves nothing behind, deletes and meta removal work, and data survives reopening. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { IndexedDBStore } from "../src/idb.js";
import { Replica } from "../src/replica.js";
import { emptyTx, MemoryStore, type OutboxRow, type RecordRow, type Store } from "../src/store.js";

interface Subject {
  name: string;
  /** A fresh empty store, and a way to open the same data again. */
  make(): { store: Store; reopen(): Store };
}

const subjects: Subject[] = [
  {
    name: "MemoryStore",
    make() {
      const s = new MemoryStore();
      return { store: s, reopen: () => s };
    },
  },
  {
    name: "IndexedDBStore",
    make() {
      const factory = new IDBFactory();
      const name = `t-${Math.random()}`;
      return { store: new IndexedDBStore(name, factory), reopen: () => new IndexedDBStore(name, factory) };
    },
  },
];

const rec = (id: string, version = 1, buckets: Record<string, number> = { b: 7 }): RecordRow => ({
  entity: "account",
  id,
  version,
  attributes: { name: `N ${id}`, n: version },
  buckets,
});
const out = (seq: number): OutboxRow => ({
  seq,
  op: "update",
  entity: "account",
  id: "a",
  base_version: 1,
  fields: { name: "x" },
  batch_id: null,
  created_at: 1,
});

for (const subject of subjects) {
  describe(`store contract: ${subject.name}`, () => {
    test("an empty store loads empty", async () => {
      const { store } = subject.make();
      assert.deepEqual(await store.load(), { records: [], outbox: [], conflicts: [], meta: {} });
    });

    test("what is committed is loaded back, also after reopening", async () => {
      const { store, reopen } = subject.make();
      await store.commit({
        ...emptyTx(),
        putRecords: [rec("a"), rec("b", 2)],
        putOutbox: [out(2), out(1)],
        meta: { cursor: 5, sums: { b: 14 } },
      });
      store.close();
      const snap = await reopen().load();
      assert.deepEqual(
        snap.records.sort((x, y) => x.id.localeCompare(y.id)),
        [rec("a"), rec("b", 2)],
      );
      assert.deepEqual(
        snap.outbox.map((o) => o.seq).sort(),
        [1, 2],
      );
      assert.deepEqual(snap.meta, { cursor: 5, sums: { b: 14 } });
    });

    test("deletes, meta removal and clearing records", async () => {
      const { store } = subject.make();
      await store.commit({ ...emptyTx(), putRecords: [rec("a"), rec("b")], putOutbox: [out(1)], meta: { x: 1, y: 2 } });
      await store.commit({ ...emptyTx(), deleteRecords: [["account", "a"]], deleteOutbox: [1], meta: { x: undefined } });
      let snap = await store.load();
      assert.deepEqual(snap.records.map((r) => r.id), ["b"]);
      assert.deepEqual(snap.outbox, []);
      assert.deepEqual(snap.meta, { y: 2 });
      await store.commit({ ...emptyTx(), clearRecords: true, putRecords: [rec("c")] });
      snap = await store.load();
      assert.deepEqual(snap.records.map((r) => r.id), ["c"]);
    });

    test("a failed commit leaves nothing behind", async () => {
      const { store } = subject.make();
      await store.commit({ ...emptyTx(), putRecords: [rec("a")] });
      const bad = { ...rec("z"), attributes: { f: () => 1 } } as unknown as RecordRow; // not storable
      await assert.rejects(store.commit({ ...emptyTx(), putRecords: [rec("b"), bad], meta: { cursor: 9 } }));
      const snap = await store.load();
      assert.deepEqual(snap.records.map((r) => r.id), ["a"]);
      assert.deepEqual(snap.meta, {});
    });

    test("later commits win over earlier ones for the same key", async () => {
      const { store } = subject.make();
      await store.commit({ ...emptyTx(), putRecords: [rec("a", 1)] });
      await store.commit({ ...emptyTx(), putRecords: [rec("a", 3)] });
      assert.equal((await store.load()).records[0].version, 3);
    });

    test("a replica on it keeps its outbox and checkpoint across reopening", async () => {
      const { store, reopen } = subject.make();
      const r = await Replica.open(store);
      await r.applyFrame([[1, "b", "put", "account", "a1", 1, { name: "A" }]], undefined, {
        type: "checkpoint",
        cursor: 1,
        checksums: { b: r.heldChecksums().b ?? 0 },
      });
      const cp = r.heldChecksums();
      await r.update("account", "a1", { name: "offline" });
      await r.create("account", { name: "new" }, "n1");
      store.close();
      const again = await Replica.open(reopen());
      assert.equal(again.deviceId, r.deviceId);
      assert.equal(again.cursor, r.cursor);
      assert.deepEqual(again.heldChecksums(), cp);
      assert.equal(again.pending().length, 2);
      assert.deepEqual(again.get("account", "a1"), { name: "offline" });
      assert.deepEqual(again.get("account", "n1"), { name: "new" });
    });
  });
}

describe("IndexedDBStore's segment log", () => {
  test("is replayed in order and compacted once it outgrows the live records", async () => {
    const factory = new IDBFactory();
    const first = new IndexedDBStore("log", factory);
    for (let i = 0; i < 200; i++) {
      await first.commit({ ...emptyTx(), putRecords: [rec("a", i), rec(`x${i}`)], deleteRecords: [["account", `x${i - 1}`]] });
    }
    await first.commit({ ...emptyTx(), clearRecords: true, putRecords: [rec("b", 1)] });
    for (let i = 0; i < 100; i++) await first.commit({ ...emptyTx(), putRecords: [rec("c", i), ...Array.from({ length: 60 }, (_, j) => rec(`y${j}`, i))] });
    first.close();
    const second = new IndexedDBStore("log", factory);
    const snap = await second.load();
    const byId = new Map(snap.records.map((r) => [r.id, r.version]));
    assert.equal(byId.get("b"), 1);
    assert.equal(byId.get("c"), 99);
    assert.equal(byId.get("y59"), 99);
    assert.equal(byId.has("a"), false, "wiped by the clear");
    assert.equal(snap.records.length, 62);
    assert.ok(second.segmentCount <= 1, `compacted to ${second.segmentCount} segment(s)`);
    await second.commit({ ...emptyTx(), putRecords: [rec("d")] });
    second.close();
    const third = await new IndexedDBStore("log", factory).load();
    assert.equal(third.records.length, 63);
  });
});
