/**
 * MD5 of a UTF-8 string (RFC 1321), only as far as bucket checksums need it: the first 32 bits of
 * the digest as an unsigned integer. Web Crypto has no MD5, and the checksum must equal the
 * server's `int(md5(...).hexdigest()[:8], 16)` bit for bit.
 */

const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
// K[i] = floor(|sin(i + 1)| * 2^32), computed once instead of a table of 64 constants.
const K = new Int32Array(64);
for (let i = 0; i < 64; i++) K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0;

const encoder = new TextEncoder();
const block = new Int32Array(16);
// The message bytes, reused between calls (grown when a longer one comes): no allocation per hash.
let buf = new Uint8Array(256);

/** UTF-8 bytes of `text` into the shared buffer; returns their count. */
function utf8(text: string): number {
  const n = text.length;
  if (n * 3 > buf.length) buf = new Uint8Array(n * 3 + 64);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return encoder.encodeInto(text, buf).written; // non-ASCII: the real encoder
    buf[i] = c;
  }
  return n;
}

/** The four 32-bit state words after hashing the first `n` bytes of `bytes` (little-endian words, as MD5 defines them). */
export function md5Words(bytes: Uint8Array, n: number = bytes.length): [number, number, number, number] {
  const total = ((n + 8) >>> 6) + 1; // 64-byte blocks after padding
  let a0 = 0x67452301 | 0;
  let b0 = 0xefcdab89 | 0;
  let c0 = 0x98badcfe | 0;
  let d0 = 0x10325476 | 0;
  for (let blk = 0; blk < total; blk++) {
    const base = blk * 64;
    if (base + 64 <= n) {
      for (let w = 0, p = base; w < 16; w++, p += 4) {
        block[w] = bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16) | (bytes[p + 3] << 24);
      }
    } else {
      for (let w = 0; w < 16; w++) {
        let word = 0;
        for (let k = 3; k >= 0; k--) {
          const pos = base + w * 4 + k;
          const byte = pos < n ? bytes[pos] : pos === n ? 0x80 : 0;
          word = (word << 8) | byte;
        }
        block[w] = word;
      }
    }
    if (blk === total - 1) {
      // The message length in bits, as a 64-bit little-endian integer in the last two words.
      block[14] = (n * 8) | 0;
      block[15] = Math.floor((n * 8) / 2 ** 32) | 0;
    }
    let a = a0;
    let b = b0;
    let c = c0;
    let d = d0;
    for (let i = 0; i < 64; i++) {
      let f: number;
      let g: number;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) & 15;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) & 15;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) & 15;
      }
      const s = S[((i >> 4) << 2) | (i & 3)];
      const sum = (a + f + K[i] + block[g]) | 0;
      a = d;
      d = c;
      c = b;
      b = (b + ((sum << s) | (sum >>> (32 - s)))) | 0;
    }
    a0 = (a0 + a) | 0;
    b0 = (b0 + b) | 0;
    c0 = (c0 + c) | 0;
    d0 = (d0 + d) | 0;
  }
  return [a0, b0, c0, d0];
}

function hexWord(w: number): string {
  let out = "";
  for (let k = 0; k < 4; k++) out += ((w >>> (8 * k)) & 0xff).toString(16).padStart(2, "0");
  return out;
}

/** The hex digest, as hashlib's `hexdigest()`. */
export function md5Hex(text: string): string {
  const n = utf8(text); // may grow (replace) buf: read it after
  return md5Words(buf, n).map(hexWord).join("");
}

/** `int(md5(text).hexdigest()[:8], 16)`: the first four digest bytes read big-endian. */
export function md5Prefix32(text: string): number {
  const n = utf8(text); // may grow (replace) buf: read it after
  const a = md5Words(buf, n)[0];
  // The digest's first word is little-endian; the hex prefix reads its bytes in order.
  return (((a & 0xff) << 24) | (((a >>> 8) & 0xff) << 16) | (((a >>> 16) & 0xff) << 8) | ((a >>> 24) & 0xff)) >>> 0;
}
