/**
 * Offline validation of a record's fields against the entity metadata the server sent, with the
 * server's vocabulary and messages (conflict-service's check_fields), so an edit the device
 * accepts is one the server accepts. shared/test-vectors/attribute_values.json holds the cases
 * both implementations are tested on.
 */
import type { Attributes, AttributeMeta, EntityMeta } from "./protocol.js";

/** The attribute types the server knows; an unknown type is not checked (newer server). */
export const ATTRIBUTE_TYPES = ["string", "int", "decimal", "bool", "datetime", "lookup", "choice"] as const;

export interface FieldError {
  field: string;
  message: string;
}

const DECIMAL = /^[+-]?(\d(_*\d)*(\.(\d(_*\d)*)?)?|\.\d(_*\d)*)([eE][+-]?\d(_*\d)*)?$/;
const NON_FINITE = /^[+-]?(inf|infinity|nan|snan)\d*$/i;
// The forms Python's datetime.fromisoformat (3.11+) reads: date, optional time, optional offset.
const DATE = /^(\d{4})-?(\d{2})-?(\d{2})$/;
const TIME = /^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?$/;
const OFFSET = /^(Z|[+-](\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,6}))?)?)?)$/;

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function isIsoDateTime(v: string): boolean {
  const sep = v.length > 10 ? v[10] : "";
  const datePart = sep ? v.slice(0, 10) : v;
  const dm = DATE.exec(datePart.length === 8 || datePart.length === 10 ? datePart : "");
  if (!dm) return false;
  const [y, mo, d] = [Number(dm[1]), Number(dm[2]), Number(dm[3])];
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo)) return false;
  if (!sep) return true;
  if (v.length === 8 || datePart.length !== 10) return false;
  let rest = v.slice(11);
  let off = "";
  const m = /(Z|[+-].*)$/.exec(rest);
  if (m) {
    off = m[1];
    rest = rest.slice(0, rest.length - off.length);
  }
  const tm = TIME.exec(rest);
  if (!tm) return false;
  if (Number(tm[1]) > 23 || Number(tm[2] ?? 0) > 59 || Number(tm[3] ?? 0) > 59) return false;
  if (off) {
    const om = OFFSET.exec(off);
    if (!om) return false;
    if (off !== "Z" && (Number(om[2]) > 23 || Number(om[3] ?? 0) > 59)) return false;
  }
  return true; // like Python, any single character may separate the date from the time
}

/** Why `value` cannot be of this attribute's type, or null when it can. */
export function typeError(spec: AttributeMeta, value: unknown): string | null {
  switch (spec.type ?? "string") {
    case "string":
      if (typeof value !== "string") return "must be a string";
      if (value.includes("\u0000")) return "must not contain NUL characters";
      if (Number.isInteger(spec.max_length) && [...value].length > (spec.max_length as number)) {
        return `longer than ${spec.max_length} characters`;
      }
      return null;
    case "int":
      return typeof value === "number" && Number.isInteger(value) ? null : "must be an integer";
    case "decimal":
      if (typeof value === "number") return Number.isFinite(value) ? null : "must be a finite number";
      if (typeof value !== "string") return "must be a number";
      if (NON_FINITE.test(value.trim())) return "must be a finite number";
      return DECIMAL.test(value.trim()) ? null : "must be a number";
    case "bool":
      return typeof value === "boolean" ? null : "must be true or false";
    case "datetime":
      return typeof value === "string" && isIsoDateTime(value) ? null : "must be an ISO 8601 date-time string";
    case "lookup":
      return typeof value === "string" && value.length > 0 ? null : "must be a record id (string)";
    case "choice": {
      if (typeof value !== "string" && !(typeof value === "number" && Number.isInteger(value))) {
        return "must be a choice value";
      }
      const options = spec.options;
      if (Array.isArray(options) && options.length && !options.includes(value)) return "is not one of the allowed choices";
      return null;
    }
    default:
      return null;
  }
}

/** The first problem with `fields` (in attribute-name order, as the server reports it), or null. */
export function checkFields(entity: EntityMeta, fields: Attributes, creating: boolean): FieldError | null {
  for (const name of Object.keys(fields).sort()) {
    const spec = entity.attributes[name];
    if (!spec) return { field: name, message: `unknown attribute '${name}' of ${entity.name}` };
    const value = fields[name];
    if (value === null || value === undefined) {
      if (spec.required) return { field: name, message: `${name} is required` };
      continue;
    }
    const problem = typeError(spec, value);
    if (problem) return { field: name, message: `${name} ${problem}` };
  }
  if (creating) {
    for (const name of Object.keys(entity.attributes).sort()) {
      const v = fields[name];
      if (entity.attributes[name].required && (v === null || v === undefined)) {
        return { field: name, message: `${name} is required` };
      }
    }
  }
  return null;
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
