/** @offsync/client: the Offsync device SDK for web and React Native apps. */
export { AuthError, AuthSession, type KeyValue, type SessionData, staticToken, type Tokens } from "./auth.js";
export { Backoff } from "./backoff.js";
export { combine, opHash } from "./checksum.js";
export { SyncClient, type SyncState, type TokenSource } from "./client.js";
export { type Filter, Offsync, type OpenOptions, type Row, type Status, type Unsubscribe } from "./db.js";
export { IndexedDBStore } from "./idb.js";
export { md5Hex } from "./md5.js";
export * as protocol from "./protocol.js";
export type { AttributeMeta, EntityMeta } from "./protocol.js";
export { Replica } from "./replica.js";
export { type ConflictRow, MemoryStore, type OutboxRow, type RecordRow, type Store } from "./store.js";
export {
  ATTRIBUTE_TYPES,
  checkFields,
  coerce,
  type FieldError,
  InvalidValue,
  normalizeDatetime,
  normalizeFields,
  typeError,
  ValidationError,
} from "./validate.js";
