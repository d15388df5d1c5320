"""Writes shared/test-vectors/*.json from the Python side's own answers: the protocol codec, the
checksum, the device store and the server's attribute validation. Run it after changing one of
them on purpose (`.venv/bin/python device-sdk/scripts/make_vectors.py`), review the diff, and make
the TypeScript SDK agree (`make test-js`). The inputs below are the cases both SDKs are held to."""

import dataclasses
import json
from pathlib import Path

from conflict_service.validation import EntityMeta, check_fields
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.checksum import combine, op_hash
from offsync_shared.domain import attributes

out = str(Path(__file__).resolve().parents[2] / "shared" / "test-vectors") + "/"
# ---------------- frames
client = [
    {"type": "hello", "device_id": "dev-1", "cursor": 0, "checksums": {}},
    {
        "type": "hello",
        "device_id": "dev-1",
        "cursor": 117,
        "checksums": {"acct:user:u-42": 1709137302, "product:all": 1184711540},
        "token": "eyJ.x.y",
        "features": ["ops_checkpoint", "entity_metadata"],
    },
    {
        "type": "upload",
        "batch_id": "5e1f0000-0000-4000-8000-000000000001",
        "changes": [
            {"seq": 0, "op": "update", "entity": "account", "id": "a-1", "base_version": 3, "fields": {"city": "Lyon"}},
            {
                "seq": 1,
                "op": "create",
                "entity": "task",
                "id": "0d8e",
                "fields": {"subject": "Call back", "n": 2, "ok": True, "x": None},
            },
            {"seq": 2, "op": "delete", "entity": "account", "id": "a-7", "base_version": 1, "fields": {}},
        ],
    },
    {
        "type": "upload",
        "batch_id": "b2",
        "changes": [
            {
                "seq": 0,
                "op": "create",
                "entity": "account",
                "id": "c-é",
                "fields": {"name": 'Zoë \u00e9\u4e2d \U0001f600 "q" \\ /', "revenue": 12.5},
            }
        ],
    },
    {"type": "hello", "device_id": "dev-2", "cursor": 5, "checksums": {"b": 7}, "app": "Field Sales"},
    {"type": "refetch", "buckets": ["acct:user:u-42"]},
    {"type": "auth", "token": "eyJ.renewed"},
    {"type": "ping", "t": 1.5},
    {"type": "pong"},
]


def to_py(f):
    t = f["type"]
    if t == "hello":
        return p.Hello(
            device_id=f["device_id"],
            cursor=f["cursor"],
            checksums=f["checksums"],
            token=f.get("token"),
            features=tuple(f.get("features", ())),
            app=f.get("app"),
        )
    if t == "upload":
        return p.Upload(
            batch_id=f["batch_id"],
            changes=tuple(
                p.Change(
                    seq=c["seq"],
                    op=c["op"],
                    entity=c["entity"],
                    id=c["id"],
                    base_version=c.get("base_version"),
                    fields=c["fields"],
                )
                for c in f["changes"]
            ),
        )
    if t == "refetch":
        return p.Refetch(tuple(f["buckets"]))
    if t == "auth":
        return p.Auth(f["token"])
    if t == "ping":
        return p.Ping(f.get("t"))
    if t == "pong":
        return p.Pong(f.get("t"))


client_vectors = [{"frame": f, "wire": p.encode(to_py(f)).decode()} for f in client]
server_wires = [
    '{"type":"welcome","version":1,"user_id":"u-42","buckets":["acct:user:u-42","product:all"],"heartbeat_s":20.0,"limits":{"max_frame_bytes":1048576,"max_changes":500,"max_pending_batches":4,"frame_rate":50,"page_size":2000}}',
    '{"type":"welcome","version":1,"user_id":"u-7","buckets":[],"heartbeat_s":20,"limits":{"max_changes":500},"sync_intervals":{"account":5,"task":60}}',
    '{"type":"ops","ops":[[101,"acct:user:u-42","put","account","a-1",3,{"name":"Contoso","city":"Paris"}],[102,"product:all","remove","product","p-9",2,null]],"done":2,"total":5,"resume":101}',
    '{"type":"ops","ops":[[117,"acct:user:u-42","put","account","a-1",4,{"name":"Contoso"}]],"done":1,"total":1,"checkpoint":{"cursor":117,"checksums":{"acct:user:u-42":1709137302}}}',
    '{"type":"checkpoint","cursor":102,"checksums":{"acct:user:u-42":2868423431,"product:all":0}}',
    '{"type":"metadata","entities":[{"name":"account","display_name":"Account","primary_attribute":"name","attributes":{"name":{"type":"string","required":true,"max_length":160},"industrycode":{"type":"choice","required":false,"options":[1,2,3]}}}]}',
    '{"type":"drop","buckets":["product:all"],"reason":"removed"}',
    '{"type":"drop","buckets":["product:all"]}',
    '{"type":"reset","buckets":["a","b"]}',
    '{"type":"result","batch_id":"5e1f","results":[{"seq":0,"entity":"account","id":"a-1","status":"applied","version":4},{"seq":1,"entity":"account","id":"a-7","status":"conflict","version":2,"record":{"version":2,"deleted":false,"attributes":{"name":"Fabrikam"}}},{"seq":2,"entity":"task","id":"t","status":"rejected","code":"validation","message":"subject is required"}]}',
    '{"type":"error","code":"batch_too_large","message":"batch has 600 changes; at most 500 per batch","retriable":false,"ref":"9a"}',
    '{"type":"error","code":"rate_limited","message":"slow down","retriable":true,"retry_after":0.5}',
    '{"type":"ping","t":1733000000.25}',
    '{"type":"pong"}',
]
bad_wires = [
    ("not json", "bad_frame"),
    ("[1,2]", "bad_frame"),
    ('{"type":5}', "bad_frame"),
    ('{"type":"nope"}', "unknown_type"),
    ('{"type":"ops","ops":[[1,"b","put","e","i"]],"done":1,"total":1}', "bad_frame"),
    ('{"type":"ops","ops":[[1,"b","upsert","e","i",1,{}]],"done":1,"total":1}', "bad_frame"),
    ('{"type":"drop","buckets":[""]}', "bad_frame"),
    ('{"type":"reset"}', "bad_frame"),
    ('{"type":"ping","t":"x"}', "bad_frame"),
    ('{"type":"checkpoint","cursor":1}', "bad_frame"),
]
NAMES = {
    p.Metadata: "metadata",
    p.Welcome: "welcome",
    p.Ops: "ops",
    p.Checkpoint: "checkpoint",
    p.Drop: "drop",
    p.Reset: "reset",
    p.Result: "result",
    p.Error: "error",
    p.Ping: "ping",
    p.Pong: "pong",
}


def norm(v):
    if dataclasses.is_dataclass(v):
        d = {"type": NAMES[type(v)]} if type(v) in NAMES else {}
        for f in dataclasses.fields(v):
            x = getattr(v, f.name)
            if x is not None:
                d[f.name] = norm(x)
        if isinstance(v, p.Error):
            d["retriable"] = v.retriable
        return d
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


server_vectors = [{"wire": w, "decoded": norm(p.decode_server(w))} for w in server_wires]
for w, code in bad_wires:
    try:
        p.decode_server(w)
        raise SystemExit(f"accepted {w}")
    except p.FrameError as e:
        assert e.code == code, (w, e.code)
server_bad = [{"wire": w, "code": c} for w, c in bad_wires]
json.dump(
    {
        "about": "Wire frames of protocol v1. client: frame -> the exact bytes both SDKs send. server: wire -> the decoded frame (nulls omitted); bad: wire -> the error code decoding raises.",
        "client": client_vectors,
        "server": server_vectors,
        "server_bad": server_bad,
    },
    open(out + "frames.json", "w"),
    indent=1,
    ensure_ascii=False,
)

# ---------------- checksums
keys = [
    ("account", "a-1", 3),
    ("account", "a-1", 4),
    ("product", "p-9", 1),
    ("contact", "c-é", 12),
    ("task", "0d8e6f8a-1b2c-4d5e-8f90-123456789abc", 1),
    ("t", "中文🙂", 99999),
    ("account", "", 0),
    ("x" * 3, "y" * 120, 2**40),
]
hashes = [{"entity": e, "id": i, "version": v, "hash": op_hash(e, i, v)} for e, i, v in keys]
total = 0
for h in hashes:
    total = combine(total, h["hash"])
after_remove = combine(total, 0, hashes[0]["hash"])
json.dump(
    {
        "about": "op_hash(entity, id, version) = int(md5('entity:id:version').hexdigest()[:8], 16); a bucket's checksum is the sum mod 2^32.",
        "hashes": hashes,
        "sums": [
            {"hashes": [h["hash"] for h in hashes], "checksum": total},
            {"hashes": [h["hash"] for h in hashes], "minus": [hashes[0]["hash"]], "checksum": after_remove},
        ],
    },
    open(out + "checksums.json", "w"),
    indent=1,
    ensure_ascii=False,
)

# ---------------- conflict outcomes
B = "acct:user:u1"
scen = [
    {
        "name": "applied update takes the server version",
        "edits": [["update", "account", "a1", {"city": "Lyon"}]],
        "results": [{"seq": 0, "status": "applied", "version": 2}],
    },
    {
        "name": "conflict: the server's record wins",
        "edits": [["update", "account", "a1", {"city": "Lyon"}]],
        "results": [
            {
                "seq": 0,
                "status": "conflict",
                "version": 3,
                "record": {"version": 3, "deleted": False, "attributes": {"name": "A", "city": "Nice"}},
            }
        ],
    },
    {
        "name": "conflict: the server deleted it",
        "edits": [["update", "account", "a1", {"city": "Lyon"}]],
        "results": [
            {
                "seq": 0,
                "status": "conflict",
                "version": 3,
                "record": {"version": 3, "deleted": True, "attributes": None},
            }
        ],
    },
    {
        "name": "rejected: the local edit is dropped, the server copy stays",
        "edits": [["update", "account", "a1", {"name": None}]],
        "results": [{"seq": 0, "status": "rejected", "code": "validation", "message": "name is required"}],
    },
    {
        "name": "applied create becomes a server record",
        "edits": [["create", "account", "n1", {"name": "New"}]],
        "results": [{"seq": 0, "status": "applied", "version": 1}],
    },
    {
        "name": "applied delete removes the record",
        "edits": [["delete", "account", "a1", {}]],
        "results": [{"seq": 0, "status": "applied"}],
    },
    {
        "name": "two updates of one record merge into one change",
        "edits": [["update", "account", "a1", {"city": "Lyon"}], ["update", "account", "a1", {"name": "B"}]],
        "results": [{"seq": 0, "status": "applied", "version": 2}],
    },
    {
        "name": "a create deleted before it was sent never reaches the server",
        "edits": [["create", "account", "n1", {"name": "New"}], ["delete", "account", "n1", {}]],
        "results": [],
    },
    {
        "name": "mixed batch",
        "edits": [
            ["update", "account", "a1", {"city": "Lyon"}],
            ["create", "account", "n1", {"name": "New"}],
            ["delete", "account", "a2", {}],
        ],
        "results": [
            {"seq": 0, "status": "applied", "version": 2},
            {"seq": 1, "status": "rejected", "code": "forbidden", "message": "no create privilege"},
            {
                "seq": 2,
                "status": "conflict",
                "version": 5,
                "record": {"version": 5, "deleted": False, "attributes": {"name": "Kept"}},
            },
        ],
    },
]
ops = [
    [1, B, "put", "account", "a1", 1, {"name": "A", "city": "Paris"}],
    [2, B, "put", "account", "a2", 4, {"name": "Two"}],
]
vectors = []
for s in scen:
    st = LocalStore()
    st.apply_ops([tuple(o) for o in ops])
    for op, e, i, f in s["edits"]:
        if op == "create":
            st.create(e, f, rid=i)
        elif op == "update":
            st.update(e, i, f)
        else:
            st.delete(e, i)
    batch = st.next_batch(500)
    sent = [] if batch is None else [json.loads(p.encode(batch))["changes"]][0]
    problems = []
    if batch is not None:
        res = p.Result(
            batch.batch_id,
            tuple(
                p.ChangeResult(
                    seq=r["seq"],
                    entity=sent[r["seq"]]["entity"],
                    id=sent[r["seq"]]["id"],
                    status=r["status"],
                    version=r.get("version"),
                    record=r.get("record"),
                    code=r.get("code"),
                    message=r.get("message"),
                )
                for r in s["results"]
            ),
        )
        problems = [{"status": x.status, "code": x.code} for x in st.apply_result(res)]
    ids = sorted({o[4] for o in ops} | {e[2] for e in s["edits"]})
    expect = {
        "sent": [{k: v for k, v in c.items()} for c in sent],
        "visible": {i: st.get("account", i) for i in ids},
        "server_versions": {i: (st.server_record("account", i) or {}).get("version") for i in ids},
        "pending": len(st.pending()),
        "problems": problems,
        "conflicts": [{"id": c.id, "status": c.status, "code": c.code} for c in st.conflicts()],
    }
    vectors.append({"name": s["name"], "edits": s["edits"], "results": s["results"], "expect": expect})
json.dump(
    {
        "about": "Offline edits on top of the ops below, the batch they make (sent, batch_id aside), the server's results for it (entity/id come from the sent changes), and the local state after. Both SDKs' stores must agree.",
        "ops": ops,
        "scenarios": vectors,
    },
    open(out + "conflict_outcomes.json", "w"),
    indent=1,
    ensure_ascii=False,
)


# ---------------- attribute values
def S(**k: object) -> dict[str, object]:  # noqa: N802 - reads like a type in the table below
    return {"type": "string", **k}


cases = [
    (S(), "abc"),
    (S(), ""),
    (S(), 5),
    (S(), True),
    (S(), ["a"]),
    (S(), "a\u0000b"),
    (S(max_length=3), "abc"),
    (S(max_length=3), "abcd"),
    (S(max_length=2), "é🙂"),
    ({"type": "int"}, 5),
    ({"type": "int"}, -7),
    ({"type": "int"}, True),
    ({"type": "int"}, 1.5),
    ({"type": "int"}, "5"),
    ({"type": "decimal"}, 1.5),
    ({"type": "decimal"}, 3),
    ({"type": "decimal"}, "12.50"),
    ({"type": "decimal"}, "-1e3"),
    ({"type": "decimal"}, ".5"),
    ({"type": "decimal"}, "1."),
    ({"type": "decimal"}, "1_000"),
    ({"type": "decimal"}, " 2.5 "),
    ({"type": "decimal"}, "abc"),
    ({"type": "decimal"}, "NaN"),
    ({"type": "decimal"}, "-Infinity"),
    ({"type": "decimal"}, False),
    ({"type": "decimal"}, [1]),
    ({"type": "decimal"}, ""),
    ({"type": "bool"}, True),
    ({"type": "bool"}, False),
    ({"type": "bool"}, 0),
    ({"type": "bool"}, "true"),
    ({"type": "datetime"}, "2024-01-02"),
    ({"type": "datetime"}, "2024-01-02T03:04:05"),
    ({"type": "datetime"}, "2024-01-02T03:04:05.123456+01:00"),
    ({"type": "datetime"}, "2024-01-02T03:04:05Z"),
    ({"type": "datetime"}, "2024-01-02 03:04"),
    ({"type": "datetime"}, "20240102"),
    ({"type": "datetime"}, "2024-02-30"),
    ({"type": "datetime"}, "2024-13-01"),
    ({"type": "datetime"}, "2024-01-02T25:00"),
    ({"type": "datetime"}, "yesterday"),
    ({"type": "datetime"}, 1700000000),
    ({"type": "datetime"}, "2024-1-2"),
    ({"type": "lookup", "target": "contact"}, "c-1"),
    ({"type": "lookup", "target": "contact"}, ""),
    ({"type": "lookup", "target": "contact"}, 7),
    ({"type": "choice"}, "hot"),
    ({"type": "choice"}, 3),
    ({"type": "choice"}, True),
    ({"type": "choice"}, 1.5),
    ({"type": "choice", "options": [1, 2, 3]}, 2),
    ({"type": "choice", "options": [1, 2, 3]}, 4),
    ({"type": "choice", "options": ["hot", "cold"]}, "warm"),
    ({"type": "choice", "options": ["hot", "cold"]}, "cold"),
    ({"type": "something_new"}, {"any": "thing"}),
    ({"type": "int"}, 2**63 + 1000),
    ({"type": "choice", "options": [1, 2, 3]}, "2"),
    ({"type": "datetime"}, "2024-01-02T00:30:00-01:30"),
    ({"type": "datetime"}, "2024-12-31T23:59:59.9999999+00:00"),
]


def coerced(spec: dict[str, object], value: object) -> dict[str, object]:
    try:
        return {"error": None, "stored": attributes.coerce(str(spec["type"]), value, spec)}
    except attributes.InvalidValue as exc:
        return {"error": str(exc)}


values = [{"spec": sp, "value": v, **coerced(sp, v)} for sp, v in cases]
ent = {
    "name": {"type": "string", "required": True, "max_length": 10},
    "revenue": {"type": "decimal"},
    "size": {"type": "int"},
    "rating": {"type": "choice", "options": ["hot", "cold"]},
}
rec_cases = [
    ({"name": "Acme"}, True),
    ({"revenue": 5}, True),
    ({"revenue": 5}, False),
    ({"name": None}, False),
    ({"size": None}, False),
    ({"zzz": 1, "name": 5}, True),
    ({"name": "Acme", "size": 1.5, "rating": "warm"}, True),
    ({"rating": "warm", "size": 2}, False),
    ({}, True),
    ({}, False),
    ({"name": "x" * 11}, False),
]
records = []
for fields, creating in rec_cases:
    err, _, stored = check_fields(EntityMeta("account", "user_or_team", ent), fields, creating=creating)
    records.append(
        {
            "fields": fields,
            "creating": creating,
            "error": None if err is None else {"field": err.field, "message": err.message},
            "stored": stored if err is None else None,
        }
    )
json.dump(
    {
        "about": "Attribute values against attribute specs (offsync_shared.domain.attributes.coerce): error is the server's message for (spec, value), null when valid, and then stored is the form the server stores. records: check_fields over an entity, the first error, or the stored fields.",
        "values": values,
        "entity": {"name": "account", "attributes": ent},
        "records": records,
    },
    open(out + "attribute_values.json", "w"),
    indent=1,
    ensure_ascii=False,
)
print("ok")
