/** Bucket checksums, the same function as offsync_shared.checksum: the sum modulo 2^32 of
 * md5("entity:id:version")[:8] over a bucket's live records. */
import { md5Prefix32 } from "./md5.js";

export const MOD = 2 ** 32;

export function opHash(entity: string, id: string, version: number): number {
  return md5Prefix32(`${entity}:${id}:${version}`);
}

/** (checksum + add - remove) mod 2^32, always in [0, 2^32). */
export function combine(checksum: number, add = 0, remove = 0): number {
  const v = (checksum + add - remove) % MOD;
  return v < 0 ? v + MOD : v;
}
