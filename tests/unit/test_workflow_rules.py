"""The template renderer and the graph rules of workflows (README, Workflows)."""

from __future__ import annotations

import pytest

from server.errors import InvalidArgument
from server.service.workflow_rules import (
    Step,
    ancestors,
    check_definition,
    input_json,
    input_text,
    render,
)

AGENT = "6f1c2a4e-0000-4000-8000-000000000000"


def test_placeholders_are_replaced_once_and_nothing_else_is_read() -> None:
    answers = {"a": "{{input}} and {{steps.a.response}}"}
    rendered = render("X {{ input }} {{steps.a.response}} {single} {{", "in", answers)
    # An answer that looks like a placeholder is text: the renderer reads its template once.
    assert rendered == "X in {{input}} and {{steps.a.response}} {single} {{"


def test_an_input_renders_as_text_or_compact_json() -> None:
    assert input_text(input_json("plain words")) == "plain words"
    assert input_text(input_json({"b": [1, 2.5], "a": "é"})) == '{"b":[1,2.5],"a":"é"}'
    assert input_text(input_json(None)) == ""
    assert input_text(input_json(3.0)) == "3"


def test_ancestors_are_transitive() -> None:
    steps = [
        Step("a", AGENT, "A"),
        Step("b", AGENT, "B", ("a",)),
        Step("c", AGENT, "C", ("b",)),
    ]
    assert ancestors(steps) == {"a": set(), "b": {"a"}, "c": {"a", "b"}}


def test_a_template_may_read_a_step_it_depends_on_through_another() -> None:
    steps = [
        Step("a", AGENT, "A"),
        Step("b", AGENT, "B", ("a",)),
        Step("c", AGENT, "{{steps.a.response}}", ("b",)),
    ]
    assert check_definition(" flow ", None, steps).name == "flow"


def test_a_longer_cycle_is_named_along_its_path() -> None:
    steps = [
        Step("a", AGENT, "A", ("c",)),
        Step("b", AGENT, "B", ("a",)),
        Step("c", AGENT, "C", ("b",)),
    ]
    with pytest.raises(InvalidArgument) as refused:
        check_definition("flow", None, steps)
    assert refused.value.message == "Invalid steps: cycle between a -> c -> b -> a"
