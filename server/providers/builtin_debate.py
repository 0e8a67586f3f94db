"""The built-in provider's side of verification: deterministic debates, for tests and demos.

agentq's verification calls send a user message whose first line names the step
(`agentq step: critique`) and whose material is in tagged sections (server/worker/
prompts.py). The built-in provider answers those by rule, reading markers in the answer
under review (its `<answer>` section) or, for the safety judge, in the prompt:

| marker | critic | judge |
|---|---|---|
| none | `NO MATERIAL ISSUES` | `{"confidence": 0.9, ...}` |
| `[wrong]` | a material critique, every round | `{"confidence": 0.2, ...}` |
| `[garbled]` | `NO MATERIAL ISSUES` | an answer that is not JSON, every time |
| `[garbled-once]` | `NO MATERIAL ISSUES` | not JSON, then (asked again) `0.9` |

A revision answers `Revised: <the question's first 20 words, markers removed>`, which
the judge then scores 0.9. The safety judge refuses a prompt containing `[unsafe]` and
allows any other. Since the built-in answer echoes the prompt's first 20 words, a
marker among them reaches the answer under review.
"""

from __future__ import annotations

import json
import re

WRONG, GARBLED, GARBLED_ONCE, UNSAFE = "[wrong]", "[garbled]", "[garbled-once]", "[unsafe]"
MARKERS = (WRONG, GARBLED_ONCE, GARBLED, UNSAFE)
# What a critic answers when it finds nothing material (server/worker/prompts.py).
NOTHING_MATERIAL = "NO MATERIAL ISSUES"
HIGH, LOW = 0.9, 0.2

_STEP = re.compile(r"agentq step: (\w+)\n")
_QUESTION_WORDS = 20


def _section(message: str, tag: str) -> str:
    """The text of the message's `<tag>` section; empty when it has none."""
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", message, re.DOTALL)
    return found.group(1) if found else ""


def _without_markers(text: str) -> str:
    for marker in MARKERS:
        text = text.replace(marker, "")
    return " ".join(text.split())


def _verdict(confidence: float, evidence: str) -> str:
    return json.dumps({"confidence": confidence, "evidence": evidence})


def step_answer(message: str) -> str | None:
    """The answer to a verification step's user message; None for any other message."""
    step = _STEP.match(message)
    if step is None:
        return None
    answer = _section(message, "answer")
    kind = step.group(1)
    if kind == "critique":
        if WRONG in answer:
            return f"The answer is marked {WRONG}, so it does not hold as it stands."
        return NOTHING_MATERIAL
    if kind == "defence":
        return "The answer stands as written; the critique does not change it."
    if kind == "verdict":
        return _judge(answer, asked_again=bool(_section(message, "unreadable")))
    if kind == "revision":
        words = _without_markers(_section(message, "question")).split()
        return "Revised: " + " ".join(words[:_QUESTION_WORDS])
    if kind == "safety":
        if UNSAFE in _section(message, "prompt"):
            return json.dumps({"allow": False, "reason": f"The prompt is marked {UNSAFE}."})
        return json.dumps({"allow": True, "reason": "An ordinary request."})
    return None


def _judge(answer: str, *, asked_again: bool) -> str:
    if GARBLED in answer or (GARBLED_ONCE in answer and not asked_again):
        return "I would say the answer is mostly fine."
    if WRONG in answer:
        return _verdict(LOW, f"The answer is marked {WRONG}.")
    return _verdict(HIGH, "The critic found nothing material.")
