/** The sync client against a scripted server (FakeSocket): hello, paged download with progress,
 * checkpoints with repair of only the disagreeing buckets, drop, uploads and their results,
 * resend after reconnect, token renewal, refusals, and live queries. */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Backoff } from "../src/backoff.js";
import { opHash } from "../src/checksum.js";
import { Offsync, type Row } from "../src/db.js";
import { MemoryStore } from "../src/store.js";
import { FakeSocket, until } from "./helpers.js";

const WELCOME = {
  type: "welcome",
  version: 1,
  user_id: "u1",
  buckets: ["b1", "b2"],
  heartbeat_s: 20,
  limits: { max_changes: 500 },
};
const META = {
  type: "metadata",
  entities: [
    {
      name: "account",
      display_name: "Account",
      attributes: { name: { type: "string", required: true, max_length: 20 }, size: { type: "int" } },
    },
  ],
};

let opened: Offsync[] = [];
afterEach(() => {
  for (const db of opened) db.close();
  opened = [];
  FakeSocket.all = [];
});

async function open(tokens: string[] = ["t1", "t2", "t3"]): Promise<{ db: Offsync; renewals: () => number }> {
  let i = 0;
  let renewals = 0;
  const db = await Offsync.open({
    url: "ws://x/v1/sync",
    store: new MemoryStore(),
    auth: {
      token: async () => tokens[i],
      renew: async () => {
        renewals++;
        return tokens[++i];
      },
    },
    backoff: new Backoff(0.001, 0.005),
    WebSocket: FakeSocket as unknown as new (url: string) => WebSocket,
  });
  opened.push(db);
  return { db, renewals: () => renewals };
}

const sum = (...keys: [string, string, number][]) => keys.reduce((t, [e, i, v]) => (t + opHash(e, i, v)) % 2 ** 32, 0);

async function connected(db: Offsync): Promise<FakeSocket> {
  db.start();
  await until(() => (FakeSocket.last?.sent.length ?? 0) > 0, 2000, "hello");
  const ws = FakeSocket.last!;
  ws.push(WELCOME);
  ws.push(META);
  await until(() => db.status.online, 2000, "online");
  return ws;
}

test("hello names the cursor, held checksums and features; download reports progress; a checkpoint is stored", async () => {
  const { db } = await open();
  const progress: unknown[] = [];
  db.onStatus((s) => {
    const last = JSON.stringify(progress[progress.length - 1]);
    if (s.downloading && JSON.stringify(s.downloading) !== last) progress.push({ ...s.downloading });
  });
  const ws = await connected(db);
  const hello = ws.sent[0];
  assert.deepEqual(hello, {
    type: "hello",
    version: 1,
    device_id: db.replica.deviceId,
    cursor: 0,
    checksums: {},
    token: "t1",
    features: ["ops_checkpoint", "entity_metadata"],
  });
  ws.push({ type: "ops", ops: [[1, "b1", "put", "account", "a1", 1, { name: "A" }]], done: 1, total: 2, resume: 1 });
  ws.push({ type: "ops", ops: [[2, "b2", "put", "account", "a2", 3, { name: "B" }]], done: 2, total: 2 });
  ws.push({ type: "checkpoint", cursor: 2, checksums: { b1: sum(["account", "a1", 1]), b2: sum(["account", "a2", 3]) } });
  await until(() => db.status.caughtUp, 2000, "caught up");
  assert.deepEqual(progress, [
    { done: 1, total: 2 },
    { done: 2, total: 2 },
  ]);
  assert.equal(db.replica.cursor, 2);
  assert.deepEqual(db.entities().map((e) => e.name), ["account"]);
  assert.deepEqual(
    db.query("account").map((r) => r.attributes.name),
    ["A", "B"],
  );
  assert.ok(db.status.lastSynced);
});

test("a frame type of a newer server is ignored; a malformed frame ends the session", async () => {
  const { db } = await open();
  const ws = await connected(db);
  ws.push({ type: "from_the_future", x: 1 });
  ws.push({ type: "ops", ops: [[1, "b1", "put", "account", "a1", 1, { name: "A" }]], done: 1, total: 1 });
  await until(() => db.query("account").length === 1, 2000, "ops after the unknown frame");
  ws.push({ type: "ops", ops: [[1, "b1"]], done: 1, total: 1 });
  await until(() => FakeSocket.all.length === 2, 2000, "reconnect after a bad frame");
  assert.match(db.status.error ?? "", /bad frame from server/);
});

test("a checksum mismatch refetches only the disagreeing buckets, and reset forgets them", async () => {
  const { db } = await open();
  const ws = await connected(db);
  ws.push({
    type: "ops",
    ops: [
      [1, "b1", "put", "account", "a1", 1, { name: "A" }],
      [2, "b2", "put", "account", "a2", 1, { name: "B" }],
    ],
    done: 2,
    total: 2,
    checkpoint: { cursor: 2, checksums: { b1: sum(["account", "a1", 1]), b2: 12345 } },
  });
  await until(() => ws.sent.some((f) => f.type === "refetch"), 2000, "refetch");
  assert.deepEqual(ws.sent.find((f) => f.type === "refetch"), { type: "refetch", buckets: ["b2"] });
  assert.deepEqual(db.client.refetched, ["b2"]);
  assert.equal(db.replica.cursor, 0, "cursor not advanced on a mismatch");
  ws.push({ type: "reset", buckets: ["b2"] });
  await until(() => db.get("account", "a2") === null, 2000, "reset");
  assert.ok(db.get("account", "a1"));
});

test("drop deletes the bucket's records but never a pending change", async () => {
  const { db } = await open();
  const ws = await connected(db);
  ws.push({
    type: "ops",
    ops: [
      [1, "b1", "put", "account", "a1", 1, { name: "A" }],
      [2, "b1", "put", "account", "a2", 1, { name: "B" }],
      [3, "b2", "put", "account", "a2", 1, { name: "B" }],
    ],
    done: 3,
    total: 3,
  });
  await until(() => db.query("account").length === 2);
  db.stop(); // offline edit
  await db.update("account", "a1", { name: "mine" });
  const ws2 = await connected(db);
  assert.notEqual(ws2, ws);
  ws2.push({ type: "drop", buckets: ["b1"], reason: "removed" });
  await until(() => !db.replica.serverRecord("account", "a1"));
  assert.ok(db.get("account", "a2"), "a2 is still held by b2");
  assert.equal(db.status.pending, 1);
});

test("uploads one batch at a time, applies results, resends the same batch after a reconnect", async () => {
  const { db } = await open();
  const ws = await connected(db);
  ws.push({ type: "ops", ops: [[1, "b1", "put", "account", "a1", 1, { name: "A" }]], done: 1, total: 1 });
  await until(() => db.query("account").length === 1);
  await db.update("account", "a1", { name: "A2" });
  await until(() => ws.sent.some((f) => f.type === "upload"), 2000, "upload");
  const up = ws.sent.find((f) => f.type === "upload");
  assert.deepEqual(up.changes, [{ seq: 0, op: "update", entity: "account", id: "a1", base_version: 1, fields: { name: "A2" } }]);
  assert.equal(db.status.uploading, true);
  // Connection lost before the answer: the same batch goes again on the next connection.
  ws.serverClose(1006, "");
  await until(() => FakeSocket.all.length === 2, 2000, "reconnect");
  const ws2 = FakeSocket.last!;
  await until(() => ws2.sent.length > 0);
  ws2.push(WELCOME);
  await until(() => ws2.sent.some((f) => f.type === "upload"), 2000, "resend");
  assert.equal(ws2.sent.find((f) => f.type === "upload").batch_id, up.batch_id);
  ws2.push({ type: "result", batch_id: up.batch_id, results: [{ seq: 0, entity: "account", id: "a1", status: "applied", version: 2 }] });
  await until(() => db.status.pending === 0);
  assert.equal(db.get("account", "a1")?.version, 2);
  assert.equal(db.get("account", "a1")?.pending, false);
});

test("a retriable error resends the batch with the same id", async () => {
  const { db } = await open();
  const ws = await connected(db);
  await db.create("account", { name: "N" });
  await until(() => ws.sent.some((f) => f.type === "upload"));
  const id = ws.sent.find((f) => f.type === "upload").batch_id;
  ws.push({ type: "error", code: "unavailable", message: "broker down", retriable: true, ref: id, retry_after: 0.01 });
  await until(() => ws.sent.filter((f) => f.type === "upload").length === 2, 2000, "resend");
  assert.equal(ws.sent.filter((f) => f.type === "upload")[1].batch_id, id);
  assert.match(db.status.error ?? "", /unavailable/);
});

test("conflicts and rejections are listed; the server's record wins locally", async () => {
  const { db } = await open();
  const ws = await connected(db);
  ws.push({ type: "ops", ops: [[1, "b1", "put", "account", "a1", 1, { name: "A" }]], done: 1, total: 1 });
  await until(() => db.query("account").length === 1);
  await db.update("account", "a1", { name: "mine" });
  await until(() => ws.sent.some((f) => f.type === "upload"));
  const id = ws.sent.find((f) => f.type === "upload").batch_id;
  ws.push({
    type: "result",
    batch_id: id,
    results: [
      {
        seq: 0,
        entity: "account",
        id: "a1",
        status: "conflict",
        version: 2,
        record: { version: 2, deleted: false, attributes: { name: "theirs" } },
      },
    ],
  });
  await until(() => db.conflicts().length === 1);
  assert.equal(db.get("account", "a1")?.attributes.name, "theirs");
  assert.equal(db.conflicts()[0].status, "conflict");
});

test("4001 renews the token and resumes with the cursor; 4004 forgets server data but keeps pending changes", async () => {
  const { db, renewals } = await open();
  const ws = await connected(db);
  ws.push({
    type: "ops",
    ops: [[5, "b1", "put", "account", "a1", 1, { name: "A" }]],
    done: 1,
    total: 1,
    checkpoint: { cursor: 5, checksums: { b1: sum(["account", "a1", 1]) } },
  });
  await until(() => db.replica.cursor === 5);
  ws.serverClose(4001, "unauthenticated: token expired");
  await until(() => FakeSocket.all.length === 2 && FakeSocket.last!.sent.length > 0, 2000, "reconnect");
  assert.equal(renewals(), 1);
  const hello = FakeSocket.last!.sent[0];
  assert.equal(hello.token, "t2");
  assert.equal(hello.cursor, 5);
  assert.deepEqual(hello.checksums, { b1: sum(["account", "a1", 1]) });
  await db.create("account", { name: "kept" });
  FakeSocket.last!.serverClose(4004, "no_profile: gone");
  await until(() => db.status.refused, 2000, "refused");
  assert.equal(db.replica.count(), 0);
  assert.equal(db.status.pending, 1);
  assert.equal(db.query("account").length, 1);
});

test("watch re-runs when synced or local changes touch its entity, once per burst", async () => {
  const { db } = await open();
  const seen: Row[][] = [];
  const off = db.watch("account", { search: "acme", orderBy: "name" }, (rows) => seen.push(rows));
  const ws = await connected(db);
  ws.push({
    type: "ops",
    ops: [
      [1, "b1", "put", "account", "a1", 1, { name: "Acme B" }],
      [2, "b1", "put", "account", "a2", 1, { name: "Other" }],
      [3, "b1", "put", "account", "a3", 1, { name: "Acme A" }],
    ],
    done: 3,
    total: 3,
  });
  await until(() => seen[seen.length - 1].length === 2);
  const runs = seen.length;
  assert.deepEqual(seen[runs - 1].map((r) => r.attributes.name), ["Acme A", "Acme B"]);
  await db.update("account", "a2", { name: "ACME C" });
  await until(() => seen.length === runs + 1);
  assert.deepEqual(seen[runs].map((r) => [r.attributes.name, r.pending]), [
    ["Acme A", false],
    ["Acme B", false],
    ["ACME C", true],
  ]);
  off();
});

test("edits are validated against the entity metadata before they reach the outbox", async () => {
  const { db } = await open();
  await connected(db);
  await assert.rejects(db.create("account", { size: 3 }), /name is required/);
  await assert.rejects(db.create("account", { name: "x", size: "3" }), /size must be an integer/);
  await assert.rejects(db.create("account", { name: "x", nope: 1 }), /unknown attribute/);
  assert.equal(db.status.pending, 0);
  // what reaches the outbox is what the server stores: a date-time in UTC
  db.replica.metadata[0].attributes.due = { type: "datetime" };
  const id = await db.create("account", { name: "x", due: "2024-01-02T03:04:05+01:00" });
  assert.equal(db.get("account", id)?.attributes.due, "2024-01-02T02:04:05.000000Z");
});

test("4010 (sign-in revoked) stops the client, forgets the sign-in and never reconnects", async () => {
  let signedOut = 0;
  const db = await Offsync.open({
    url: "ws://x/v1/sync",
    store: new MemoryStore(),
    auth: { token: async () => "t1", renew: async () => "t2", signOut: () => void signedOut++ },
    backoff: new Backoff(0.001, 0.005),
    WebSocket: FakeSocket as unknown as new (url: string) => WebSocket,
  });
  opened.push(db);
  const ws = await connected(db);
  ws.serverClose(4010, "revoked: an administrator revoked this device; sign in again");
  await until(() => db.status.signedOut, 2000, "signed out");
  assert.equal(signedOut, 1);
  assert.match(db.status.error ?? "", /revoked/);
  // No reconnect was scheduled (a retry would be a timer), and no new socket was opened.
  assert.equal((db as unknown as { client: { timer: unknown } }).client.timer, null);
  assert.equal(FakeSocket.all.length, 1);
});

/** A store whose commits wait, once `hold` is set, until the test releases them. */
class GatedStore extends MemoryStore {
  hold = false;
  release: () => void = () => undefined;
  private gate = new Promise<void>((r) => (this.release = r));
  override async commit(tx: Parameters<MemoryStore["commit"]>[0]): Promise<void> {
    if (this.hold) await this.gate;
    return super.commit(tx);
  }
}

async function openOn(store: GatedStore): Promise<Offsync> {
  const db = await Offsync.open({
    url: "ws://x/v1/sync",
    store,
    auth: { token: async () => "t1" },
    backoff: new Backoff(0.001, 0.005),
    WebSocket: FakeSocket as unknown as new (url: string) => WebSocket,
  });
  opened.push(db);
  return db;
}

test("synced() resolves only once the store holds the checkpoint", async () => {
  const store = new GatedStore();
  const db = await openOn(store);
  const ws = await connected(db);
  store.hold = true;
  const ops = [[1, "b1", "put", "account", "a1", 1, { name: "A" }]];
  ws.push({ type: "ops", ops, done: 1, total: 1, checkpoint: { type: "checkpoint", cursor: 1, checksums: { b1: sum(["account", "a1", 1]), b2: 0 } } });
  let done = false;
  const synced = db.synced().then(() => (done = true));
  await until(() => db.status.caughtUp, 2000, "caught up in memory");
  // The store's commit is held by the gate, so nothing can have resolved synced() yet.
  assert.equal(done, false, "synced() must wait for the store");
  store.release();
  await synced;
  const snap = await store.load();
  assert.equal(snap.meta.cursor, 1);
  assert.deepEqual(
    snap.records.map((r) => r.id),
    ["a1"],
  );
});

test("a checkpoint frame does not hold up the next frame while the store writes it", async () => {
  const store = new GatedStore();
  const db = await openOn(store);
  const ws = await connected(db);
  const seen: string[] = [];
  db.watch("account", {}, (rows) => seen.splice(0, seen.length, ...rows.map((r) => r.id)));
  store.hold = true;
  ws.push({ type: "checkpoint", cursor: 0, checksums: { b1: 0, b2: 0 } });
  ws.push({ type: "ops", ops: [[1, "b1", "put", "account", "a1", 1, { name: "A" }]], done: 1, total: 1 });
  // The checkpoint's commit is held by the gate: the ops frame behind it is applied regardless.
  await until(() => seen.includes("a1"), 2000, "the ops frame after the checkpoint applied");
  store.release();
  await db.replica.flushed();
  assert.deepEqual(
    (await store.load()).records.map((r) => r.id),
    ["a1"],
  );
});
