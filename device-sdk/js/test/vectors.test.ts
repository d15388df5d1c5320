/** The shared vectors (shared/test-vectors) against the TypeScript SDK: the same files the
 * Python SDK's tests read (device-sdk/tests/test_shared_vectors.py). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { combine, opHash } from "../src/checksum.js";
import { md5Hex } from "../src/md5.js";
import { decodeServer, encode, FrameError } from "../src/protocol.js";
import { Replica } from "../src/replica.js";
import { MemoryStore } from "../src/store.js";
import { coerce, normalizeFields, typeError } from "../src/validate.js";
import { vectors } from "./helpers.js";

const frames = vectors("frames.json");
const checksums = vectors("checksums.json");
const outcomes = vectors("conflict_outcomes.json");
const attributes = vectors("attribute_values.json");

test("md5 matches known digests", () => {
  assert.equal(md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  assert.equal(md5Hex("The quick brown fox jumps over the lazy dog"), "9e107d9d372bb6826bd81d3542a419d6");
  assert.equal(md5Hex("a".repeat(56)), "3b0c8ac703f828b04c6c197006d17218");
  assert.equal(md5Hex("a".repeat(64)), "014842d480b571495a4a0363793f7367");
});

test("client frames encode to the shared bytes", () => {
  for (const c of frames.client) assert.equal(encode(c.frame), c.wire, c.frame.type);
});

test("server frames decode as shared", () => {
  for (const c of frames.server) assert.deepEqual(decodeServer(c.wire), c.decoded, c.wire);
});

test("bad server frames are refused with the shared code", () => {
  for (const c of frames.server_bad) {
    assert.throws(
      () => decodeServer(c.wire),
      (e: unknown) => e instanceof FrameError && e.code === c.code,
      c.wire,
    );
  }
});

test("checksums", () => {
  for (const h of checksums.hashes) assert.equal(opHash(h.entity, h.id, h.version), h.hash, `${h.entity}:${h.id}`);
  for (const s of checksums.sums) {
    let total = 0;
    for (const x of s.hashes) total = combine(total, x);
    for (const x of s.minus ?? []) total = combine(total, 0, x);
    assert.equal(total, s.checksum);
  }
});

for (const s of outcomes.scenarios) {
  test(`conflict outcome: ${s.name}`, async () => {
    const r = await Replica.open(new MemoryStore());
    await r.applyFrame(outcomes.ops);
    for (const [op, entity, id, fields] of s.edits) {
      if (op === "create") await r.create(entity, fields, id);
      else if (op === "update") await r.update(entity, id, fields);
      else await r.delete(entity, id);
    }
    const batch = await r.nextBatch(500);
    const sent = batch === null ? [] : JSON.parse(encode(batch)).changes;
    assert.deepEqual(sent, s.expect.sent);
    let problems: { status: string; code: string | null }[] = [];
    if (batch !== null) {
      const results = s.results.map((x: any) => ({ ...x, entity: sent[x.seq].entity, id: sent[x.seq].id }));
      problems = (await r.applyResult({ type: "result", batch_id: batch.batch_id, results })).map((x) => ({
        status: x.status,
        code: x.code ?? null,
      }));
    }
    assert.deepEqual(problems, s.expect.problems);
    for (const [id, v] of Object.entries(s.expect.visible)) assert.deepEqual(r.get("account", id), v, `visible ${id}`);
    for (const [id, v] of Object.entries(s.expect.server_versions)) {
      assert.equal(r.serverRecord("account", id)?.version ?? null, v, `server version ${id}`);
    }
    assert.equal(r.pending().length, s.expect.pending);
    assert.deepEqual(
      r.conflicts().map((c) => ({ id: c.id, status: c.status, code: c.code })),
      s.expect.conflicts,
    );
  });
}

test("attribute values validate as the server does", () => {
  for (const c of attributes.values) {
    const what = `${JSON.stringify(c.spec)} ${JSON.stringify(c.value)}`;
    assert.equal(typeError(c.spec, c.value), c.error, what);
    if (c.error === null) assert.deepEqual(coerce(c.spec, c.value), c.stored, what);
  }
});

test("record fields validate as the server does", () => {
  for (const c of attributes.records) {
    const [error, stored] = normalizeFields(attributes.entity, c.fields, c.creating);
    assert.deepEqual(error, c.error, JSON.stringify(c));
    assert.deepEqual(error === null ? stored : null, c.stored, JSON.stringify(c));
  }
});

test("md5 of long and non-ASCII input (buffer growth, the UTF-8 path)", () => {
  assert.equal(md5Hex("a".repeat(1000)), "cabe45dcc9ae5b66ba86600cca6b8ba8");
  assert.equal(md5Hex("é"), "66ddcd97cfdeabb2f6fb8a999b4bc76f");
  assert.equal(md5Hex("中文🙂".repeat(50)), "13ca56611cd64a9a208e3c6522698a5f");
  assert.equal(md5Hex("a".repeat(1000)), "cabe45dcc9ae5b66ba86600cca6b8ba8", "after the buffer grew");
});
