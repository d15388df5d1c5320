"""Bucket checksums: the same function in Python and in SQL, so devices, the publish worker and
set-wise SQL all agree.

An op's hash is the first 32 bits of md5("entity:id:version"); a bucket's checksum is the sum of
the hashes of its live (put) records modulo 2**32. Sums commute, so it updates incrementally.
"""

from __future__ import annotations

try:  # CPython's own MD5: ~40% faster than OpenSSL's for inputs this small (no EVP set-up per call)
    from _md5 import md5 as _md5  # type: ignore[import-not-found]
except ImportError:  # a build without it (e.g. FIPS): the same digest through hashlib
    from hashlib import md5 as _md5

MOD = 2**32

# SQL expression of the same hash, for INSERT ... SELECT; $entity/$id/$version are column names.
SQL_OP_HASH = "('x' || substr(md5({entity} || ':' || {id} || ':' || {version}::text), 1, 8))::bit(32)::bigint"


def op_hash(entity: str, record_id: str, version: int) -> int:
    # The first 4 bytes of the digest, big-endian: the first 8 hex digits, without the hex text.
    return int.from_bytes(_md5(f"{entity}:{record_id}:{version}".encode()).digest()[:4], "big")


def combine(checksum: int, add: int = 0, remove: int = 0) -> int:
    return (checksum + add - remove) % MOD
