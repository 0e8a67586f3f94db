"""Anyone holding a job can recompute its context_hash and merkle_root (docs/contract.md §3)."""

from __future__ import annotations

import hashlib
import json

import pytest

from server.worker.hashes import context_hash, merkle_root

RUN = {
    "agent_id": "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01",
    "role": "You are a careful research assistant.",
    "prompt": "Résumé en français, s'il vous plaît: «ça va?» — 日本語も 🙂",
    "response": 'Oui. "Ça va" means "it goes".\nLine two\\ with a backslash.',
}


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_context_hash_is_the_sha256_of_the_canonical_json_of_the_run() -> None:
    canonical = json.dumps(RUN, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert context_hash(**RUN) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_context_hash_hashes_non_ascii_text_as_utf8_not_as_escapes() -> None:
    # The canonical text written out by hand: keys in order, no spaces, raw UTF-8.
    canonical = '{"agent_id":"a-1","prompt":"héllo 🙂","response":"ok","role":"poet"}'

    digest = context_hash(agent_id="a-1", role="poet", prompt="héllo 🙂", response="ok")

    assert digest == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("changed", sorted(RUN))
def test_context_hash_changes_when_any_part_of_the_run_changes(changed: str) -> None:
    assert context_hash(**{**RUN, changed: RUN[changed] + "."}) != context_hash(**RUN)


def test_context_hash_is_64_lowercase_hex_digits() -> None:
    digest = context_hash(**RUN)

    assert len(digest) == 64
    assert digest == digest.lower()
    bytes.fromhex(digest)


def test_the_merkle_root_of_one_step_is_that_steps_hash() -> None:
    step = context_hash(**RUN)

    assert merkle_root([step]) == step


def test_the_merkle_root_of_two_steps_hashes_their_raw_digests_together() -> None:
    a, b = _sha256(b"step one"), _sha256(b"step two")

    assert merkle_root([a.hex(), b.hex()]) == _sha256(a + b).hex()


def test_the_merkle_root_keeps_step_order() -> None:
    a, b = _sha256(b"step one").hex(), _sha256(b"step two").hex()

    assert merkle_root([a, b]) != merkle_root([b, a])


def test_the_merkle_root_of_three_steps_carries_the_odd_one_up() -> None:
    a, b, c = (_sha256(s) for s in (b"one", b"two", b"three"))

    assert merkle_root([a.hex(), b.hex(), c.hex()]) == _sha256(_sha256(a + b) + c).hex()


def test_the_merkle_root_of_four_steps_is_a_balanced_tree() -> None:
    a, b, c, d = (_sha256(s) for s in (b"one", b"two", b"three", b"four"))

    expected = _sha256(_sha256(a + b) + _sha256(c + d)).hex()
    assert merkle_root([h.hex() for h in (a, b, c, d)]) == expected


def test_a_run_without_steps_has_no_merkle_root() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        merkle_root([])
