"""The rules of a workflow's definition and its prompt templates (README, Workflows).

A definition is checked whole, every broken rule reported at once, before anything is
stored. Templates are plain text with placeholders `{{input}}` and
`{{steps.<name>.response}}` (white space inside the braces allowed); the renderer only
substitutes those, in one pass, so nothing an input or an answer holds is ever read as
a placeholder, and nothing is evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from server.errors import FieldViolation, InvalidArgument
from server.service.event_log import (
    DATA_DEPTH_MESSAGE,
    DATA_NUMBER_MESSAGE,
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_TYPE_CHARS,
    TYPE_CHARACTERS,
    compact_json,
    nesting,
    reserved_message,
)
from server.store.event_log import reserved_prefix
from server.validation import MAX_PROMPT_CHARS, MIN_PROMPT_CHARS, parse_id

MAX_NAME_CHARS = 100
MAX_STEPS = 20
STEP_NAME_CHARACTERS = "a-z0-9_-"  # a regex character class
MAX_STEP_NAME_CHARS = 50
_STEP_NAME = re.compile(f"[{STEP_NAME_CHARACTERS}]{{1,{MAX_STEP_NAME_CHARS}}}")
_EVENT_TYPE = re.compile(f"[{TYPE_CHARACTERS}]{{1,{MAX_TYPE_CHARS}}}")
NAME_MESSAGE = f"Invalid name: must be 1 to {MAX_NAME_CHARS} characters after trimming, without NUL"
STEPS_MESSAGE = f"Invalid steps: must be 1 to {MAX_STEPS} steps"
EVENT_TYPE_MESSAGE = (
    f"Invalid trigger.event_type: must be 1 to {MAX_TYPE_CHARS} characters of {TYPE_CHARACTERS}"
)
INPUT_SIZE_MESSAGE = f"Invalid input: must be at most {MAX_DATA_BYTES} bytes as compact JSON"
INPUT_NUMBER_MESSAGE = DATA_NUMBER_MESSAGE.replace("data", "input")
INPUT_DEPTH_MESSAGE = DATA_DEPTH_MESSAGE.replace("data", "input")
MASK_FIELDS = ("name", "trigger", "steps")
MASK_EMPTY = "Invalid update_mask: must name at least one of name, trigger, steps"
# `{{ ... }}`, shortest first: each placeholder ends at the first `}}`.
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP_ANSWER = re.compile(
    rf"steps\.([{STEP_NAME_CHARACTERS}]{{1,{MAX_STEP_NAME_CHARS}}})\.response"
)
INPUT = "input"


@dataclass(frozen=True)
class Step:
    """One step: a name, the agent that runs it, its prompt template, what it waits for."""

    name: str
    agent_id: str
    prompt: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Definition:
    """A checked workflow: trimmed name, optional trigger, steps in declared order."""

    name: str
    trigger_event_type: str | None
    steps: tuple[Step, ...]


def steps_json(steps: Sequence[Step]) -> str:
    """The steps as stored with a version."""
    return json.dumps([{**asdict(s), "depends_on": list(s.depends_on)} for s in steps])


def steps_of(stored: str) -> tuple[Step, ...]:
    """The steps of a stored version."""
    return tuple(
        Step(s["name"], s["agent_id"], s["prompt"], tuple(s["depends_on"]))
        for s in json.loads(stored)
    )


def check_definition(
    name: str, trigger_event_type: str | None, steps: Sequence[Step]
) -> Definition:
    """The definition, each field of its rule; every broken rule is reported at once."""
    violations: list[FieldViolation] = []
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or "\x00" in name:
        violations.append(FieldViolation("name", NAME_MESSAGE))
    if trigger_event_type is not None:
        violations += _trigger_violations(trigger_event_type)
    checked = _check_steps(steps, violations)
    if violations:
        raise InvalidArgument(violations)
    return Definition(name, trigger_event_type, checked)


def _trigger_violations(event_type: str) -> list[FieldViolation]:
    if not _EVENT_TYPE.fullmatch(event_type):
        return [FieldViolation("trigger.event_type", EVENT_TYPE_MESSAGE)]
    prefix = reserved_prefix(event_type)
    if prefix is not None:
        return [
            FieldViolation("trigger.event_type", reserved_message("trigger.event_type", prefix))
        ]
    return []


def _check_steps(steps: Sequence[Step], violations: list[FieldViolation]) -> tuple[Step, ...]:
    if not 1 <= len(steps) <= MAX_STEPS:
        violations.append(FieldViolation("steps", STEPS_MESSAGE))
        return ()
    checked: list[Step] = []
    names: set[str] = set()
    for index, step in enumerate(steps):
        field = f"steps[{index}]"
        if not _STEP_NAME.fullmatch(step.name):
            message = f"must be 1 to {MAX_STEP_NAME_CHARS} characters of {STEP_NAME_CHARACTERS}"
            violations.append(FieldViolation(f"{field}.name", f"Invalid {field}.name: {message}"))
        elif step.name in names:
            message = f"Invalid {field}.name: '{step.name}' is the name of an earlier step"
            violations.append(FieldViolation(f"{field}.name", message))
        names.add(step.name)
        agent_id = step.agent_id
        try:
            agent_id = parse_id(step.agent_id, f"{field}.agent_id")
        except InvalidArgument as error:
            violations += error.violations
        prompt = step.prompt.strip()
        if not MIN_PROMPT_CHARS <= len(prompt) <= MAX_PROMPT_CHARS:
            message = f"must be {MIN_PROMPT_CHARS} to {MAX_PROMPT_CHARS} characters after trimming"
            violations.append(
                FieldViolation(f"{field}.prompt", f"Invalid {field}.prompt: {message}")
            )
        elif "\x00" in prompt:
            message = f"Invalid {field}.prompt: must not contain NUL characters"
            violations.append(FieldViolation(f"{field}.prompt", message))
        checked.append(Step(step.name, agent_id, prompt, tuple(dict.fromkeys(step.depends_on))))
    for index, step in enumerate(checked):
        for dependency in step.depends_on:
            if dependency not in names:
                field = f"steps[{index}].depends_on"
                message = f"Invalid {field}: '{dependency}' is not the name of a step"
                violations.append(FieldViolation(field, message))
    if violations:
        return tuple(checked)
    cycle = _cycle(checked)
    if cycle is not None:
        message = f"Invalid steps: cycle between {' -> '.join(cycle)}"
        violations.append(FieldViolation("steps", message))
        return tuple(checked)
    before = ancestors(checked)
    for index, step in enumerate(checked):
        violations += _template_violations(
            f"steps[{index}].prompt", step.prompt, before[step.name], names
        )
    return tuple(checked)


def _cycle(steps: Sequence[Step]) -> list[str] | None:
    """A cycle of the dependencies as the names along it, first name repeated; else None."""
    depends = {step.name: step.depends_on for step in steps}
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for dependency in depends[name]:
            found = visit(dependency)
            if found is not None:
                return found
        path.pop()
        done.add(name)
        return None

    for step in steps:
        found = visit(step.name)
        if found is not None:
            return found
    return None


def ancestors(steps: Sequence[Step]) -> dict[str, set[str]]:
    """Each step's dependencies, direct and transitive (the graph has no cycle)."""
    depends = {step.name: step.depends_on for step in steps}
    found: dict[str, set[str]] = {}

    def of(name: str) -> set[str]:
        if name not in found:
            found[name] = set()
            for dependency in depends[name]:
                found[name] |= {dependency, *of(dependency)}
        return found[name]

    for step in steps:
        of(step.name)
    return found


def _template_violations(
    field: str, template: str, allowed: set[str], names: set[str]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for match in _PLACEHOLDER.finditer(template):
        expression = match.group(1).strip()
        answer = _STEP_ANSWER.fullmatch(expression)
        if expression == INPUT:
            continue
        if answer is None:
            message = (
                f"Invalid {field}: '{match.group(0)}' is not a placeholder: use {{{{input}}}}"
                " or {{steps.<name>.response}}"
            )
        elif answer.group(1) not in names:
            message = f"Invalid {field}: '{match.group(0)}' names no step"
        elif answer.group(1) not in allowed:
            message = (
                f"Invalid {field}: '{match.group(0)}' names a step this one does not depend on"
            )
        else:
            continue
        violations.append(FieldViolation(field, message))
    return violations


def render(template: str, input_text: str, answers: Mapping[str, str]) -> str:
    """The template with each placeholder replaced, in one pass (checked at creation)."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression == INPUT:
            return input_text
        answer = _STEP_ANSWER.fullmatch(expression)
        return answers.get(answer.group(1), "") if answer is not None else match.group(0)

    return _PLACEHOLDER.sub(value, template)


def input_json(value: Any) -> str:
    """A run's input as stored: compact JSON of at most 65,536 bytes, nested as deep as an
    event's data may be (it travels as a protobuf Struct), else INVALID_ARGUMENT."""
    if nesting(value) > MAX_DATA_DEPTH:
        raise InvalidArgument.field(INPUT, INPUT_DEPTH_MESSAGE)
    try:
        stored = compact_json({INPUT: value})[len(INPUT) + 4 : -1]
    except InvalidArgument:
        raise InvalidArgument.field(INPUT, INPUT_NUMBER_MESSAGE) from None
    if len(stored.encode()) > MAX_DATA_BYTES:
        raise InvalidArgument.field(INPUT, INPUT_SIZE_MESSAGE)
    return stored


def input_text(stored: str) -> str:
    """What `{{input}}` renders: a string as it is, null as nothing, else its compact JSON."""
    value = json.loads(stored)
    if value is None:
        return ""
    return value if isinstance(value, str) else stored


def check_mask(paths: Sequence[str]) -> set[str]:
    """The fields an update changes, each one of MASK_FIELDS."""
    unknown = [path for path in paths if path not in MASK_FIELDS]
    if unknown:
        message = f"Invalid update_mask: '{unknown[0]}' is not one of {', '.join(MASK_FIELDS)}"
        raise InvalidArgument.field("update_mask", message)
    if not paths:
        raise InvalidArgument.field("update_mask", MASK_EMPTY)
    return set(paths)
