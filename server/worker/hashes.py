"""The proof hashes of a run: context_hash and merkle_root (docs/contract.md §3)."""

from __future__ import annotations

import hashlib
import json


def context_hash(*, agent_id: str, role: str, prompt: str, response: str) -> str:
    """SHA-256 hex of the canonical JSON of what was run and answered.

    Canonical means: keys sorted, no insignificant white space, UTF-8, no
    ASCII escaping; so `json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` in any language's equivalent recomputes it.
    """
    document = {"agent_id": agent_id, "prompt": prompt, "response": response, "role": role}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def merkle_root(step_hashes: list[str]) -> str:
    """Root of a binary Merkle tree over hex step hashes.

    A parent is the SHA-256 of its two children's raw 32-byte digests; an odd
    node out is carried up unchanged, so one step's root is its own hash.
    """
    if not step_hashes:
        raise ValueError("a run has at least one step")
    level = [bytes.fromhex(h) for h in step_hashes]
    while len(level) > 1:
        paired = [
            hashlib.sha256(a + b).digest() for a, b in zip(level[::2], level[1::2], strict=False)
        ]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()
