"""Judges whether a signing secret is fit for production: refuses the dev secret (however it is
padded), placeholders copied from a manifest, and low-entropy strings; and says when a bind
address exposes a stack that still signs with the dev secret.

Pure: the settings validator and ``serve`` call it. A heuristic cannot prove a secret random; it
refuses what is certainly not (docs/security.md says how to make a good one).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

MIN_LENGTH = 32
# Estimated bits (length x per-character Shannon entropy of the string itself). A 32-character
# `openssl rand -hex 16` scores ~115, `openssl rand -base64 32` ~190; "abab…" or "x"*32 far less.
MIN_ESTIMATED_BITS = 96.0
MIN_DISTINCT_CHARACTERS = 10
# Words that mark a value as an example to be replaced (compared without case or punctuation).
PLACEHOLDER_WORDS = (
    "changeme",
    "replaceme",
    "placeholder",
    "example",
    "yoursecret",
    "secrethere",
    "devsecret",
    "insecure",
    "notasecret",
    "todo",
    "fixme",
)


def estimated_bits(secret: str) -> float:
    if not secret:
        return 0.0
    n = len(secret)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(secret).values())
    return n * entropy


def _repeats_a_unit(secret: str) -> bool:
    """True for "abcabcabc…": the string is its own rotation by less than its length."""
    return len(secret) > 1 and (secret + secret).find(secret, 1) < len(secret)


def weakness(secret: str, dev_secret: str) -> str | None:
    """Why ``secret`` must not sign production tokens, or None when nothing is known against it."""
    if secret != secret.strip():
        return "it has leading or trailing whitespace (a copy-paste slip?)"
    if len(secret) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    folded = re.sub(r"[^a-z0-9]", "", secret.lower())
    if dev_secret.lower() in secret.lower() or re.sub(r"[^a-z0-9]", "", dev_secret.lower()) in folded:
        return "it is (or contains) the development secret"
    for word in PLACEHOLDER_WORDS:
        if word in folded:
            return f"it looks like a placeholder (contains {word!r})"
    if len(set(secret)) < MIN_DISTINCT_CHARACTERS or _repeats_a_unit(secret):
        return "it is too repetitive"
    if estimated_bits(secret) < MIN_ESTIMATED_BITS:
        return "it has too little entropy"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
