/**
 * Offline validation of a record's fields against the entity metadata the server sent, with the
 * server's vocabulary, messages and stored forms (offsync_shared.domain.attributes.coerce and
 * conflict-service's check_fields), so an edit the device accepts is one the server accepts, in
 * the form the server will store. shared/test-vectors/attribute_values.json holds the cases both
 * implementations are tested on.
 */
import type { Attributes, AttributeMeta, EntityMeta } from "./protocol.js";

/** The attribute types the server knows; an unknown type is not checked (newer server). */
export const ATTRIBUTE_TYPES = ["string", "int", "decimal", "bool", "datetime", "lookup", "choice"] as const;

const INT64 = 2n ** 63n - 1n;

export interface FieldError {
  field: string;
  message: string;
}

/** A value that is not of its attribute's type; the message completes "<name> ...". */
export class InvalidValue extends Error {}

// The forms Python's datetime.fromisoformat (3.11+) reads: date, optional time, optional offset.
const DATE = /^(\d{4})-?(\d{2})-?(\d{2})$/;
const TIME = /^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?$/;
const OFFSET = /^(?:Z|([+-])(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,6}))?)?)?)$/;

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

const DT_ERROR = "must be an ISO 8601 date-time string";
const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** An ISO 8601 date-time as the server stores it: UTC, microseconds always written
 * (`2024-01-02T04:00:00.000000Z`); no offset means UTC. Throws InvalidValue. */
export function normalizeDatetime(v: string): string {
  const sep = v.length > 10 ? v[10] : "";
  const datePart = sep ? v.slice(0, 10) : v;
  const dm = datePart.length === 8 || datePart.length === 10 ? DATE.exec(datePart) : null;
  if (!dm || (sep && datePart.length !== 10)) throw new InvalidValue(DT_ERROR);
  const [y, mo, d] = [Number(dm[1]), Number(dm[2]), Number(dm[3])];
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo)) throw new InvalidValue(DT_ERROR);
  let h = 0;
  let mi = 0;
  let s = 0;
  let micro = 0;
  let offsetS = 0;
  if (sep) {
    let rest = v.slice(11);
    const m = /(Z|[+-].*)$/.exec(rest);
    let off = "";
    if (m) {
      off = m[1];
      rest = rest.slice(0, rest.length - off.length);
    }
    const tm = TIME.exec(rest);
    if (!tm) throw new InvalidValue(DT_ERROR);
    h = Number(tm[1]);
    mi = Number(tm[2] ?? 0);
    s = Number(tm[3] ?? 0);
    if (h > 23 || mi > 59 || s > 59) throw new InvalidValue(DT_ERROR);
    if (tm[4] !== undefined) micro = Number(tm[4].slice(0, 6).padEnd(6, "0"));
    if (off && off !== "Z") {
      const om = OFFSET.exec(off);
      if (!om) throw new InvalidValue(DT_ERROR);
      const oh = Number(om[2]);
      const omi = Number(om[3] ?? 0);
      const os = Number(om[4] ?? 0);
      if (oh > 23 || omi > 59 || os > 59) throw new InvalidValue(DT_ERROR);
      offsetS = (om[1] === "-" ? -1 : 1) * (oh * 3600 + omi * 60 + os);
    }
  }
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, s) - offsetS * 1000);
  if (y < 100) t.setUTCFullYear(y, mo - 1, d); // Date.UTC maps years 0-99 to 1900-1999
  return (
    `${pad(t.getUTCFullYear(), 4)}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}` +
    `T${pad(t.getUTCHours())}:${pad(t.getUTCMinutes())}:${pad(t.getUTCSeconds())}.${pad(micro, 6)}Z`
  );
}

function text(value: unknown, limit: number | null): string {
  if (typeof value !== "string") throw new InvalidValue("must be a string");
  if (value.includes("\u0000")) throw new InvalidValue("must not contain NUL characters");
  // Python counts code points, not UTF-16 units.
  if (limit !== null && [...value].length > limit) throw new InvalidValue(`longer than ${limit} characters`);
  return value;
}

function integer(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new InvalidValue("must be an integer (a JSON number, not a string)");
  }
  const big = BigInt(value);
  if (big > INT64 || big < -INT64) throw new InvalidValue("is out of the 64-bit integer range");
  return value;
}

/** `value` (not null) in the form the server stores it, or InvalidValue with the server's reason. */
export function coerce(spec: AttributeMeta, value: unknown): unknown {
  switch (spec.type ?? "string") {
    case "string":
      return text(value, Number.isInteger(spec.max_length) ? (spec.max_length as number) : null);
    case "lookup":
      if (typeof value !== "string" || !value) throw new InvalidValue("must be a record id (string)");
      return text(value, null);
    case "int":
      return integer(value);
    case "choice": {
      if (typeof value !== "number" || !Number.isInteger(value)) {
        throw new InvalidValue("must be a choice value (an integer, not a string)");
      }
      const options = spec.options;
      if (Array.isArray(options) && options.length && !options.includes(value)) {
        throw new InvalidValue("is not one of the allowed choices");
      }
      return integer(value);
    }
    case "decimal":
      if (typeof value !== "number") throw new InvalidValue("must be a number (a JSON number, not a string)");
      if (!Number.isFinite(value)) throw new InvalidValue("must be a finite number");
      return value;
    case "bool":
      if (typeof value !== "boolean") throw new InvalidValue("must be true or false");
      return value;
    case "datetime":
      return normalizeDatetime(text(value, null));
    default:
      return value;
  }
}

/** Why `value` cannot be of this attribute's type, or null when it can. */
export function typeError(spec: AttributeMeta, value: unknown): string | null {
  try {
    coerce(spec, value);
    return null;
  } catch (e) {
    if (e instanceof InvalidValue) return e.message;
    throw e;
  }
}

/** The first problem with `fields` (in attribute-name order, as the server reports it) and the
 * fields in the form the server stores them (null when there is a problem). */
export function checkFields(entity: EntityMeta, fields: Attributes, creating: boolean): FieldError | null {
  return normalizeFields(entity, fields, creating)[0];
}

export function normalizeFields(entity: EntityMeta, fields: Attributes, creating: boolean): [FieldError | null, Attributes] {
  const stored: Attributes = {};
  for (const name of Object.keys(fields).sort()) {
    const spec = entity.attributes[name];
    if (!spec) return [{ field: name, message: `unknown attribute '${name}' of ${entity.name}` }, {}];
    const value = fields[name];
    if (value === null || value === undefined) {
      if (spec.required) return [{ field: name, message: `${name} is required` }, {}];
      stored[name] = null;
      continue;
    }
    try {
      stored[name] = coerce(spec, value);
    } catch (e) {
      if (e instanceof InvalidValue) return [{ field: name, message: `${name} ${e.message}` }, {}];
      throw e;
    }
  }
  if (creating) {
    for (const name of Object.keys(entity.attributes).sort()) {
      const v = fields[name];
      if (entity.attributes[name].required && (v === null || v === undefined)) {
        return [{ field: name, message: `${name} is required` }, {}];
      }
    }
  }
  return [null, stored];
}

export class ValidationError extends Error {
  constructor(
    readonly entity: string,
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "ValidationError";
  }
}
