"""A property-based fuzz of the OpenAPI schema: every one of schemathesis's checks passes.

Schemathesis loads the live shim's /openapi.json and sends what it generates from it,
valid and invalid, over real HTTP to the shim in front of a real gRPC server, and applies
every check it has. Every response must be documented for its operation (status code,
content type, headers, body schema); none may be a 5xx (the backend is up, so 503 and 504
are failures here too); every request the schema calls valid must be accepted and every
one it calls invalid refused, so the document states the server's rules exactly.

The API routes are fuzzed with a caller's bearer JWT, the admin routes with the admin
token (X-Admin-API-Key) and the token exchange with a live API key (X-API-Key), so every
route is reached past its credential check.

Each operation gets its own bounded, derandomized Hypothesis run inside one pytest test
per kind of caller, so one server per database kind serves the whole module, and every
failing operation is reported, each with a curl command that reproduces it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from tests.e2e.fuzz_live import REQUEST_TIMEOUT_S, VALID_BODIES, Live
from tests.e2e.fuzz_live import live as live  # the fixture every test here runs against

if TYPE_CHECKING:
    # Case keeps its name: Hypothesis seeds a derandomized run from the test's source.
    from schemathesis.specs.openapi.schemas import OpenApiCase as Case
    from schemathesis.specs.openapi.schemas import OpenApiOperation

# Every check schemathesis has, each enabled: those on every response (status code,
# content type, headers, body schema, no 5xx), that valid data is accepted and invalid
# data refused, and that a call without its credential is refused.
CHECKS_CONFIG = {"enabled": True}
load_all_checks()  # registers the OpenAPI checks, so CHECKS names every one
# Bounded per operation and derandomized (Hypothesis derives its seed from the test), so a
# failure found once is found again on every run and machine, and the file stays quick.
FUZZ_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Schemathesis raises a group of its check failures (a BaseExceptionGroup) and Hypothesis
# may raise several distinct ones at once; anything else is a failure too.
CHECK_FAILURES = (Exception, BaseExceptionGroup)
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Free-form strings outside the body: the tenant named in a path or a query. A URL can
# carry a NUL (%00) and a byte that is not UTF-8 (%FF), but not a lone surrogate.
AWKWARD_PARAMETERS = {
    "GET /admin/api-keys": "query",
    "GET /admin/tenants/{tenant_id}/limits": "path",
    "PUT /admin/tenants/{tenant_id}/limits": "path",
}
AWKWARD_URL_TEXT = {"a NUL": "edge%00case", "a 0xff byte": "edge%FFcase"}
# Text that JSON can carry but the generator never draws: a NUL, which some databases
# refuse, and a lone UTF-16 surrogate, a legal JSON escape that is not encodable as UTF-8.
AWKWARD_TEXT = {"a NUL": "edge\x00case", "a lone surrogate": "edge\ud800case"}


def _live_schema(live: Live, *, with_security_parameters: bool) -> BaseSchema:
    """The schema as the live shim serves it at /openapi.json."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"with-security-parameters": with_security_parameters},
            "checks": CHECKS_CONFIG,
        }
    )
    enabled = config.projects.default.checks_config_for()
    disabled = [name for name in CHECKS.get_all_names() if not getattr(enabled, name).enabled]
    assert not disabled, f"checks left out of the run: {disabled}"
    return schemathesis.openapi.from_url(
        f"{live.url}/openapi.json", config=config, timeout=REQUEST_TIMEOUT_S
    )


def _operations(schema: BaseSchema) -> list[OpenApiOperation]:
    paths = schema.raw_schema["paths"]
    operations = [
        schema[path][method]
        for path in sorted(paths)
        for method in HTTP_METHODS
        if method in paths[path]
    ]
    assert len(operations) >= 5, [op.label for op in operations]
    return operations


def _call(case: Case, live: Live, *, authorized: bool) -> int:
    """Send one case and apply every check; the status it got."""
    credentials = live.credentials_for(case.operation)
    # No list of checks: schemathesis applies every one its config enables, which is all.
    # Credentials passed here, not drawn into the case, count as the caller's own: the
    # check of ignored authentication then sends the case again without them, and with
    # wrong ones, and requires a refusal.
    response = case.call_and_validate(
        headers=credentials if authorized else None, timeout=REQUEST_TIMEOUT_S
    )
    for header, value in credentials.items():
        sent = response.request.headers.get(header)
        if authorized:
            assert sent == value, f"the case went out without the valid {header}"
        else:
            assert sent != value
    if not authorized and case.operation.path.startswith(("/api/", "/admin/")):
        assert not 200 <= response.status_code < 300, "a call succeeded without a credential"
    return response.status_code


def _without_page_token(case: Case) -> Case:
    """A valid case without `page_token`, which only the server can make.

    A page token is opaque and carries the server's HMAC tag, so no value a generator
    draws is one: its refusal as 422 `Invalid page_token` is tested in test_page_tokens.py.
    """
    if case.query:
        case.query.pop("page_token", None)
    return case


def _future_expiry(case: Case) -> Case:
    """A valid case whose `expires_at`, if any, lies in the near future.

    Whether a time is in the future depends on the clock, which no schema can state: the
    refusal of a past expiry (422 `Invalid expires_at: must be in the future`) is tested
    in test_self_service_keys.py.
    """
    if isinstance(case.body, dict) and case.body.get("expires_at") is not None:
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        case.body["expires_at"] = tomorrow.isoformat().replace("+00:00", "Z")
    return case


def _well_formed_workflow(live: Live) -> Callable[[Case], Case]:
    """Valid workflow bodies made so where no schema can say it: each step of the fuzzer's
    agent, named apart, depending on nothing, with no `{{` in its prompt, no `job.` trigger,
    and a PATCH naming its fields by its keys. Those rules are tested in
    test_workflow_rules.py.
    """

    def fix(case: Case) -> Case:
        if not case.operation.path.startswith("/api/v1/workflows") or not isinstance(
            case.body, dict
        ):
            return case
        body: dict[str, Any] = case.body
        for index, step in enumerate(body.get("steps") or []):
            step.update(name=f"s{index}", agent_id=live.agent_id, depends_on=[])
            step["prompt"] = step["prompt"].replace("{{", "{ {")
        trigger = body.get("trigger")
        if isinstance(trigger, dict) and trigger["event_type"].startswith("job."):
            trigger["event_type"] = "order.created"
        if case.operation.method.upper() == "PATCH":
            body.pop("update_mask", None)
            body.setdefault("name", "fuzzed")
        return case

    return fix


def _public_url(case: Case) -> Case:
    """A valid case whose webhook `url` names a public address: what a host resolves to no
    schema states (the refusals are tested in test_webhook_errors.py)."""
    if isinstance(case.body, dict) and case.body.get("url") is not None:
        case.body["url"] = "https://8.8.8.8/hook"
    return case


def _fuzz(
    live: Live, operations: list[OpenApiOperation], *, authorized: bool, known_ids: bool
) -> Counter[tuple[str, int]]:
    """Fuzz each operation with valid and invalid cases; fail listing every one that broke."""
    seen: Counter[tuple[str, int]] = Counter()
    failures = []
    for operation in operations:
        fixed: dict[str, Any] = {}
        if known_ids:
            fixed["path_parameters"] = live.ids_for(operation)
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, **fixed)
            .map(_without_page_token)
            .map(_future_expiry)
            .map(_well_formed_workflow(live))
            .map(_public_url),
            operation.as_strategy(GenerationMode.NEGATIVE, **fixed),
        )

        @FUZZ_SETTINGS
        @given(case=cases)
        def run(case: Case) -> None:
            seen[(case.operation.label, _call(case, live, authorized=authorized))] += 1

        try:
            run()
        except CHECK_FAILURES as failure:  # every operation's failure is reported, not the first
            failures.append(f"=== {operation.label} ===\n{failure}")
    assert not failures, "\n\n".join(failures)
    return seen


def test_with_a_valid_token_every_response_is_documented_and_none_is_a_5xx(live: Live) -> None:
    schema = _live_schema(live, with_security_parameters=False)
    seen = _fuzz(live, _operations(schema), authorized=True, known_ids=False)
    api_statuses = {status for label, status in seen if label.split(" ", 1)[1].startswith("/api/")}
    # The token got cases past the shim: some succeeded, and random well-formed ids
    # came back as the server's 404.
    assert 404 in api_statuses and any(200 <= s < 300 for s in api_statuses), seen
    # The admin token and the API key got past their checks too.
    reached = {label for label, status in seen if 200 <= status < 300}
    assert reached >= {
        "GET /admin/api-keys",
        "GET /admin/tenants/{tenant_id}/limits",
        "POST /api/v1/tokens",
    }, seen
    assert ("DELETE /admin/api-keys/{key_id}", 404) in seen, seen


def test_on_an_existing_agent_and_job_every_response_is_documented_and_none_is_a_5xx(
    live: Live,
) -> None:
    schema = _live_schema(live, with_security_parameters=False)
    with_ids = [op for op in _operations(schema) if live.ids_for(op)]
    assert len(with_ids) >= 3, [op.label for op in with_ids]
    seen = _fuzz(live, with_ids, authorized=True, known_ids=True)
    reached = {label for label, status in seen if 200 <= status < 300}
    assert reached >= {
        "GET /api/v1/agents/{agent_id}",
        "POST /api/v1/agents/{agent_id}/execute",
        "GET /api/v1/jobs/{job_id}",
        "DELETE /admin/api-keys/{key_id}",
        "GET /admin/tenants/{tenant_id}/limits",
    }, seen


def test_without_a_valid_token_every_response_is_documented_and_none_is_a_5xx(
    live: Live,
) -> None:
    # Schemathesis sends no credential headers, or ones it made up: never a valid one.
    schema = _live_schema(live, with_security_parameters=True)
    seen = _fuzz(live, _operations(schema), authorized=False, known_ids=False)
    assert 401 in {status for _, status in seen}, seen
    assert 403 in {status for label, status in seen if " /admin/" in label}, seen


def _string_fields(schema: BaseSchema, operation: OpenApiOperation) -> list[str]:
    """The request body's properties that may hold a string, read from the live schema."""
    body = schema.raw_schema["paths"][operation.path][operation.method.lower()]["requestBody"]
    body_schema = body["content"]["application/json"]["schema"]
    ref = body_schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        body_schema = schema.raw_schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    def may_be_string(prop: dict[str, Any]) -> bool:
        return prop.get("type") == "string" or any(may_be_string(p) for p in prop.get("anyOf", []))

    return [name for name, prop in body_schema["properties"].items() if may_be_string(prop)]


def test_text_the_generator_never_draws_causes_no_5xx_in_any_string_field(live: Live) -> None:
    schema = _live_schema(live, with_security_parameters=False)
    failures, sent = [], 0
    for label, valid in VALID_BODIES.items():
        method, path = label.split(" ", 1)
        operation = schema[path][method.lower()]
        fields = _string_fields(schema, operation)
        assert {k for k, v in valid.items() if isinstance(v, str)} <= set(fields), (label, fields)
        bodies: dict[str, Any] = {
            f"{field} holding {what}": {**valid, field: text}
            for field in fields
            for what, text in AWKWARD_TEXT.items()
        }
        # The same bodies with a byte that is not UTF-8 (ÿ sent as Latin-1).
        bodies |= {
            f"{field} holding a 0xff byte": json.dumps(
                {**valid, field: "edge\u00ffcase"}, ensure_ascii=False
            ).encode("latin-1")
            for field in fields
        }
        bodies["a body that is one 0xff byte"] = b"\xff"
        for what, body in bodies.items():
            case = operation.Case(
                body=body,
                headers=live.credentials_for(operation),
                path_parameters=live.ids_for(operation),
                media_type="application/json",
            )
            sent += 1
            try:
                _call(case, live, authorized=True)
            except CHECK_FAILURES as failure:  # every body's failure is reported, not the first
                failures.append(f"=== {label} with {what} ===\n{failure}")
    for label, where in AWKWARD_PARAMETERS.items():
        method, path = label.split(" ", 1)
        documented = schema.raw_schema["paths"][path][method.lower()]["responses"]
        for what, text in AWKWARD_URL_TEXT.items():
            # Sent as written: a client library would encode the % again.
            if where == "path":
                url = live.url + path.replace("{tenant_id}", text)
            else:
                url = f"{live.url}{path}?tenant_id={text}"
            response = httpx.request(
                method,
                url,
                headers=live.credentials_for(schema[path][method.lower()]),
                json=VALID_BODIES.get(label),
                timeout=REQUEST_TIMEOUT_S,
            )
            sent += 1
            if response.status_code >= 500 or str(response.status_code) not in documented:
                failures.append(
                    f"=== {label} with tenant_id ({where}) holding {what} ===\n"
                    f"{method} {url} -> {response.status_code} {response.text}"
                )
    assert sent >= 28, sent
    assert not failures, "\n\n".join(failures)
