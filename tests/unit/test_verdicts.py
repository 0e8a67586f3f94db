"""What the critic and the judges answer is read strictly, and never guessed at."""

from __future__ import annotations

import pytest

from server.worker.verdicts import (
    SafetyVerdict,
    Unreadable,
    Verdict,
    is_material,
    read_safety,
    read_verdict,
)


@pytest.mark.parametrize(
    "said", ["NO MATERIAL ISSUES", "no material issues.", "  No Material Issues \n"]
)
def test_the_critics_sentinel_alone_means_nothing_material(said: str) -> None:
    assert not is_material(said)


@pytest.mark.parametrize(
    "said",
    [
        "NO MATERIAL ISSUES, but the tone is off.",
        "I found NO MATERIAL ISSUES",
        "No material issues!",
        "",
        "The figure is wrong.",
    ],
)
def test_anything_else_a_critic_says_is_a_material_critique(said: str) -> None:
    assert is_material(said)


@pytest.mark.parametrize(
    ("said", "read"),
    [
        ('{"confidence": 0.8, "evidence": "Matches."}', Verdict(0.8, "Matches.")),
        ('{"evidence": " Sound. ", "confidence": 1}', Verdict(1.0, "Sound.")),
        ('```json\n{"confidence": 0, "evidence": "Wrong."}\n```', Verdict(0.0, "Wrong.")),
        ('  ```\n{"confidence": 0.5, "evidence": "Unsure."}\n```  ', Verdict(0.5, "Unsure.")),
    ],
)
def test_a_verdict_is_one_json_object_of_confidence_and_evidence(said: str, read: Verdict) -> None:
    assert read_verdict(said) == read


@pytest.mark.parametrize(
    ("said", "why"),
    [
        ("Looks right.", "it is not JSON"),
        ('Verdict: {"confidence": 0.8, "evidence": "x"}', "it is not JSON"),
        ('{"confidence": 0.8, "evidence": "x"} Hope that helps.', "it is not JSON"),
        ("[0.8]", "it is not a JSON object"),
        ('{"confidence": 0.8}', "it has the keys ['confidence'] instead of"),
        ('{"confidence": 0.8, "evidence": "x", "notes": ""}', "it has the keys"),
        ('{"confidence": 1.2, "evidence": "x"}', "confidence is not a number from 0 to 1"),
        ('{"confidence": -0.1, "evidence": "x"}', "confidence is not a number from 0 to 1"),
        ('{"confidence": true, "evidence": "x"}', "confidence is not a number from 0 to 1"),
        ('{"confidence": "0.8", "evidence": "x"}', "confidence is not a number from 0 to 1"),
        ('{"confidence": NaN, "evidence": "x"}', "it is not JSON (NaN is not a JSON number)"),
        ('{"confidence": 0.8, "evidence": "  "}', "evidence is not a non-empty string"),
        ('{"confidence": 0.8, "evidence": 3}', "evidence is not a non-empty string"),
        ('{"confidence": 0.1, "confidence": 0.9, "evidence": "x"}', "a key is repeated"),
    ],
)
def test_a_verdict_in_any_other_form_is_unreadable_and_says_why(said: str, why: str) -> None:
    with pytest.raises(Unreadable) as error:
        read_verdict(said)

    assert why in str(error.value)


def test_a_safety_verdict_is_allow_and_a_reason() -> None:
    assert read_safety('{"allow": false, "reason": "Asks for keys."}') == SafetyVerdict(
        False, "Asks for keys."
    )
    with pytest.raises(Unreadable, match="allow is not true or false"):
        read_safety('{"allow": "no", "reason": "x"}')
