/**
 * The device sync protocol v1 codec (docs/protocol.md): frame types, client frame encoding that is
 * byte-identical to offsync_shared.protocol.encode, and server frame decoding with the same
 * checks. Pure: no socket, no store.
 */

export const VERSION = 1;
export const PATH = "/v1/sync";

export const CLOSE = {
  GOING_AWAY: 1001,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  TRY_AGAIN_LATER: 1013,
  BAD_HELLO: 4000,
  UNAUTHENTICATED: 4001,
  FORBIDDEN: 4003,
  NO_PROFILE: 4004,
  APP_NOT_AVAILABLE: 4006,
  TIMEOUT: 4008,
  SUPERSEDED: 4009,
  REVOKED: 4010,
} as const;

/** Close codes after which reconnecting cannot help until an admin changes something. */
export const REFUSALS: ReadonlySet<number> = new Set([
  CLOSE.FORBIDDEN,
  CLOSE.NO_PROFILE,
  CLOSE.BAD_HELLO,
  CLOSE.APP_NOT_AVAILABLE,
]);

export const ERR = {
  BAD_FRAME: "bad_frame",
  UNKNOWN_TYPE: "unknown_type",
  FRAME_TOO_LARGE: "frame_too_large",
  BATCH_TOO_LARGE: "batch_too_large",
  RATE_LIMITED: "rate_limited",
  UNAVAILABLE: "unavailable",
  UNKNOWN_BUCKET: "unknown_bucket",
} as const;

/** Optional behaviours named in hello.features (unknown names are ignored by both sides). */
export const FEATURE_OPS_CHECKPOINT = "ops_checkpoint";
/** The server sends a `metadata` frame (the profile's entities and attributes) after `welcome`. */
export const FEATURE_ENTITY_METADATA = "entity_metadata";

export type Attributes = Record<string, unknown>;
export type ChangeOp = "create" | "update" | "delete";

// ------------------------------------------------------------------ client -> server ----
export interface Hello {
  type: "hello";
  device_id: string;
  cursor: number;
  checksums: Record<string, number>;
  token?: string;
  features?: string[];
  /** The app module the device syncs for (close 4006 when the user's profile is not in it). */
  app?: string;
}
export interface Change {
  seq: number;
  op: ChangeOp;
  entity: string;
  id: string;
  base_version?: number | null;
  fields: Attributes;
}
export interface Upload {
  type: "upload";
  batch_id: string;
  changes: Change[];
}
export interface Refetch {
  type: "refetch";
  buckets: string[];
}
export interface Auth {
  type: "auth";
  token: string;
}
export interface Ping {
  type: "ping";
  t?: number;
}
export interface Pong {
  type: "pong";
  t?: number;
}
export type ClientFrame = Hello | Upload | Refetch | Auth | Ping | Pong;

// ------------------------------------------------------------------ server -> client ----
/** [op_id, bucket, "put" | "remove", entity, id, version, attributes | null] */
export type OpRow = [number, string, "put" | "remove", string, string, number, Attributes | null];

export interface Checkpoint {
  type: "checkpoint";
  cursor: number;
  checksums: Record<string, number>;
}
export interface Welcome {
  type: "welcome";
  version: number;
  user_id: string;
  buckets: string[];
  heartbeat_s: number;
  limits: Record<string, number>;
  /** Each profile item's sync interval in minutes ({} from servers that send none). */
  sync_intervals: Record<string, number>;
}
export interface Ops {
  type: "ops";
  ops: OpRow[];
  done: number;
  total: number;
  resume?: number;
  checkpoint?: Checkpoint;
}
export interface Drop {
  type: "drop";
  buckets: string[];
  reason: string;
}
export interface Reset {
  type: "reset";
  buckets: string[];
}
export interface ServerRecord {
  version: number;
  deleted?: boolean;
  attributes?: Attributes | null;
}
export interface ChangeResult {
  seq: number;
  entity: string;
  id: string;
  status: "applied" | "conflict" | "rejected";
  version?: number;
  record?: ServerRecord;
  code?: string;
  message?: string;
}
export interface Result {
  type: "result";
  batch_id: string;
  results: ChangeResult[];
}
export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  retriable: boolean;
  ref?: string;
  retry_after?: number;
}
/** One attribute of an entity, as admin.entities describes it (types: see attributeTypes). */
export interface AttributeMeta {
  type: string;
  required?: boolean;
  max_length?: number;
  options?: (string | number)[];
  target?: string;
  display_name?: string;
}
export interface EntityMeta {
  name: string;
  display_name: string;
  primary_attribute?: string;
  attributes: Record<string, AttributeMeta>;
}
export interface Metadata {
  type: "metadata";
  entities: EntityMeta[];
}
export type ServerFrame = Welcome | Ops | Checkpoint | Drop | Reset | Result | ErrorFrame | Metadata | Ping | Pong;

export class FrameError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "FrameError";
  }
}

// ----------------------------------------------------------------------- encoding ----
// Key order and omitted nulls follow offsync_shared.protocol.encode, so both SDKs put the same
// bytes on the wire (checked by the shared vectors in shared/test-vectors/frames.json).

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined || o[k] === null) delete o[k];
  return o;
}

export function encode(frame: ClientFrame): string {
  switch (frame.type) {
    case "hello":
      return JSON.stringify(
        dropUndefined({
          type: "hello",
          version: VERSION,
          device_id: frame.device_id,
          cursor: frame.cursor,
          checksums: frame.checksums,
          token: frame.token,
          features: frame.features && frame.features.length ? frame.features : undefined,
          app: frame.app,
        }),
      );
    case "upload":
      return JSON.stringify({
        type: "upload",
        batch_id: frame.batch_id,
        changes: frame.changes.map((c) =>
          dropUndefined({
            seq: c.seq,
            op: c.op,
            entity: c.entity,
            id: c.id,
            base_version: c.base_version,
            fields: c.fields,
          }),
        ),
      });
    case "refetch":
      return JSON.stringify({ type: "refetch", buckets: frame.buckets });
    case "auth":
      return JSON.stringify({ type: "auth", token: frame.token });
    case "ping":
    case "pong":
      return JSON.stringify(dropUndefined({ type: frame.type, t: frame.t }));
  }
}

// ----------------------------------------------------------------------- decoding ----
function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

function buckets(obj: Record<string, unknown>): string[] {
  const v = obj.buckets;
  if (!Array.isArray(v) || !v.every((b) => typeof b === "string" && b.length > 0)) {
    throw new FrameError(ERR.BAD_FRAME, "'buckets' must be a list of bucket ids");
  }
  return v as string[];
}

function checkpointOf(obj: unknown): Checkpoint {
  const o = obj as Record<string, unknown>;
  if (!o || !isInt(o.cursor) || typeof o.checksums !== "object" || o.checksums === null) {
    throw new FrameError(ERR.BAD_FRAME, "malformed checkpoint");
  }
  const checksums: Record<string, number> = {};
  for (const [k, v] of Object.entries(o.checksums as Record<string, unknown>)) {
    if (!isInt(v)) throw new FrameError(ERR.BAD_FRAME, "malformed checkpoint checksum");
    checksums[k] = v;
  }
  return { type: "checkpoint", cursor: o.cursor, checksums };
}

function opRow(row: unknown): OpRow {
  if (!Array.isArray(row) || row.length !== 7) {
    throw new FrameError(ERR.BAD_FRAME, "an op must be [op_id, bucket, op, entity, id, version, attributes]");
  }
  const [opId, , op, , , version] = row;
  if (!isInt(opId) || !isInt(version) || (op !== "put" && op !== "remove")) {
    throw new FrameError(ERR.BAD_FRAME, `malformed op ${JSON.stringify(row.slice(0, 6))}`);
  }
  return row as OpRow;
}

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined || v === null) throw new FrameError(ERR.BAD_FRAME, `missing ${what}`);
  return v;
}

/** Parse one server frame; throws FrameError (bad_frame / unknown_type) like decode_server. */
export function decodeServer(raw: string): ServerFrame {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(raw);
  } catch (e) {
    throw new FrameError(ERR.BAD_FRAME, `frame is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new FrameError(ERR.BAD_FRAME, "frame must be a JSON object");
  }
  const t = obj.type;
  if (typeof t !== "string") throw new FrameError(ERR.BAD_FRAME, "frame needs a string 'type'");
  switch (t) {
    case "ops": {
      if (!Array.isArray(obj.ops)) throw new FrameError(ERR.BAD_FRAME, "malformed ops frame: 'ops' must be a list");
      const frame: Ops = {
        type: "ops",
        ops: obj.ops.map(opRow),
        done: Number(need(obj.done, "done")),
        total: Number(need(obj.total, "total")),
      };
      if (obj.resume !== undefined && obj.resume !== null) frame.resume = Number(obj.resume);
      if (obj.checkpoint !== undefined && obj.checkpoint !== null) frame.checkpoint = checkpointOf(obj.checkpoint);
      return frame;
    }
    case "checkpoint":
      return checkpointOf(obj);
    case "welcome":
      return {
        type: "welcome",
        version: Number(need(obj.version, "version")),
        user_id: String(need(obj.user_id, "user_id")),
        buckets: (need(obj.buckets, "buckets") as unknown[]).map(String),
        heartbeat_s: Number(need(obj.heartbeat_s, "heartbeat_s")),
        limits: { ...(need(obj.limits, "limits") as Record<string, number>) },
        sync_intervals: Object.fromEntries(
          Object.entries((obj.sync_intervals ?? {}) as Record<string, unknown>).map(([k, v]) => [k, Number(v)]),
        ),
      };
    case "result": {
      const results = need(obj.results, "results");
      if (!Array.isArray(results)) throw new FrameError(ERR.BAD_FRAME, "malformed result frame");
      return {
        type: "result",
        batch_id: String(need(obj.batch_id, "batch_id")),
        results: results.map((r: Record<string, unknown>) => {
          if (!isInt(r?.seq)) throw new FrameError(ERR.BAD_FRAME, "malformed result: seq");
          return dropUndefined({
            seq: r.seq,
            entity: String(r.entity),
            id: String(r.id),
            status: r.status as ChangeResult["status"],
            version: r.version as number | undefined,
            record: r.record as ServerRecord | undefined,
            code: r.code as string | undefined,
            message: r.message as string | undefined,
          });
        }),
      };
    }
    case "error":
      return dropUndefined({
        type: "error",
        code: String(need(obj.code, "code")),
        message: String(need(obj.message, "message")),
        retriable: Boolean(obj.retriable),
        ref: obj.ref as string | undefined,
        retry_after: obj.retry_after as number | undefined,
      });
    case "drop":
      return { type: "drop", buckets: buckets(obj), reason: typeof obj.reason === "string" ? obj.reason : "removed" };
    case "reset":
      return { type: "reset", buckets: buckets(obj) };
    case "metadata": {
      const entities = need(obj.entities, "entities");
      if (!Array.isArray(entities)) throw new FrameError(ERR.BAD_FRAME, "malformed metadata frame");
      return { type: "metadata", entities: entities as EntityMeta[] };
    }
    case "ping":
    case "pong": {
      if (obj.t !== undefined && obj.t !== null && typeof obj.t !== "number") {
        throw new FrameError(ERR.BAD_FRAME, "'t' must be a number");
      }
      return dropUndefined({ type: t, t: obj.t as number | undefined });
    }
  }
  throw new FrameError(ERR.UNKNOWN_TYPE, `unknown frame type '${t.slice(0, 40)}'`);
}

/** Seconds from a 1013 close reason's `retry_after=<s>`, 0 when absent. */
export function retryAfterFromReason(reason: string): number {
  const m = /retry_after=([0-9.]+)/.exec(reason);
  return m ? Number(m[1]) || 0 : 0;
}
