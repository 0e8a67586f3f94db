"""The REST shim serves exactly the `google.api.http` bindings of the proto contract.

The bindings are read from the compiled descriptors of `agentq.v1`, so this checks what
the gRPC server is built from, not the text of the .proto files.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from pydantic import BaseModel

import agentq.v1
from rest_shim.app import create_app
from rest_shim.settings import RestSettings

# The bindings the shim was first written against; more may be added, none may vanish.
FOUNDING_BINDINGS = {
    "agentq.v1.AgentService.CreateAgent": ("POST", "/api/v1/agents"),
    "agentq.v1.AgentService.GetAgent": ("GET", "/api/v1/agents/{agent_id}"),
    "agentq.v1.AgentService.Execute": ("POST", "/api/v1/agents/{agent_id}/execute"),
    "agentq.v1.JobService.GetJob": ("GET", "/api/v1/jobs/{job_id}"),
    "agentq.v1.SystemService.GetHealth": ("GET", "/health"),
}
# The bindings of access control (issue 5): the operator's admin API and the token exchange.
ACCESS_BINDINGS = {
    "agentq.v1.AdminService.CreateApiKey": ("POST", "/admin/api-keys"),
    "agentq.v1.AdminService.ListApiKeys": ("GET", "/admin/api-keys"),
    "agentq.v1.AdminService.RevokeApiKey": ("DELETE", "/admin/api-keys/{key_id}"),
    "agentq.v1.AdminService.SetTenantLimits": ("PUT", "/admin/tenants/{tenant_id}/limits"),
    "agentq.v1.AdminService.GetTenantLimits": ("GET", "/admin/tenants/{tenant_id}/limits"),
    "agentq.v1.TokenService.CreateToken": ("POST", "/api/v1/tokens"),
}
# Fields the shim reads from a standard HTTP header instead of where google.api.http
# transcoding puts them (the body or the query); any other field must be where it says.
HEADER_FIELDS = {
    ("agentq.v1.AgentService.Execute", "request_id"): "idempotency-key",
    ("agentq.v1.JobService.WatchJob", "after_sequence"): "last-event-id",
}
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")
# `{agent_id}`, `{agent_id=agents/*}` (proto) or `{agent_id:path}` (Starlette) → `{agent_id}`.
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=:]+)(?:[=:][^}]*)?\}")


@dataclass(frozen=True)
class Binding:
    """One `google.api.http` rule of one RPC."""

    rpc: str
    method: str
    path: str
    body: str
    request: Descriptor

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def path_variables(self) -> set[str]:
        return set(_TEMPLATE_VARIABLE.findall(self.path))


@dataclass(frozen=True)
class Route:
    """One method of one FastAPI route."""

    method: str
    path: str
    route: APIRoute

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def _normalised(path: str) -> str:
    return _TEMPLATE_VARIABLE.sub(r"{\1}", path)


def _rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Binding:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        assert pattern in _HTTP_VERBS, f"{method.full_name}: binding without a pattern"
        verb, path = pattern.upper(), getattr(rule, pattern)
    return Binding(method.full_name, verb, _normalised(path), rule.body, method.input_type)


def _service_modules() -> list[Any]:
    names = [m.name for m in pkgutil.iter_modules(agentq.v1.__path__)]
    return [
        importlib.import_module(f"agentq.v1.{name}")
        for name in sorted(names)
        if name.endswith("_service_pb2")
    ]


def _all_rpcs() -> list[MethodDescriptor]:
    return [
        method
        for module in _service_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def _all_bindings() -> list[Binding]:
    return [_binding(method, rule) for method in _all_rpcs() for rule in _rules(method)]


def _shim_app() -> FastAPI:
    # Routes exist as soon as the app is built; no gRPC server is needed.
    return create_app(RestSettings(grpc_target="127.0.0.1:9"))


# Where the shim serves RPCs: the API, the operator's admin API, and /health. Every route
# under these is an RPC's binding; FastAPI's own pages (/docs, /openapi.json) are not.
_BOUND_PREFIXES = ("/api/", "/admin/")


def _bound_routes(app: FastAPI) -> list[Route]:
    """The app's routes under /api/ and /admin/, and /health, one per method."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        # FastAPI before included routers became lazy: app.routes is flat.
        candidates = [(r, r.path, r.methods) for r in app.routes if isinstance(r, APIRoute)]
    else:
        candidates = [
            (c.original_route, c.path, c.methods)
            for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute)
        ]
    return [
        Route(method, _normalised(path), route)
        for route, path, methods in candidates
        if path.startswith(_BOUND_PREFIXES) or path == "/health"
        for method in sorted(methods or ())
    ]


@pytest.fixture(scope="module")
def bindings() -> list[Binding]:
    return _all_bindings()


@pytest.fixture(scope="module")
def routes() -> list[Route]:
    return _bound_routes(_shim_app())


def _served(bindings: list[Binding], routes: list[Route]) -> list[tuple[Binding, Route]]:
    """Each binding with its route; bindings without one are the business of another test."""
    by_key = {r.key: r for r in routes}
    return [(b, by_key[b.key]) for b in bindings if b.key in by_key]


def _body_model(route: Route) -> type[BaseModel]:
    body_params = route.route.dependant.body_params
    assert len(body_params) == 1, f"{route.key}: expected one JSON body, got {body_params}"
    model = body_params[0].field_info.annotation
    assert isinstance(model, type) and issubclass(model, BaseModel), model
    return model


def test_the_founding_bindings_are_all_read_from_the_descriptors(bindings: list[Binding]) -> None:
    found = {b.rpc: b.key for b in bindings}
    expected = FOUNDING_BINDINGS | ACCESS_BINDINGS
    missing = {rpc: key for rpc, key in expected.items() if found.get(rpc) != key}
    assert not missing, f"bindings not found as expected: {missing}; found {found}"


def test_the_admin_and_token_routes_are_among_the_routes_checked(routes: list[Route]) -> None:
    # The other tests compare bindings with these routes; a route left out of the
    # collection would pass them unseen.
    collected = {r.key for r in routes}
    missing = sorted(f"{m} {p}" for m, p in ACCESS_BINDINGS.values() if (m, p) not in collected)
    assert not missing, f"routes not collected for the parity checks: {missing}"


def test_every_rpc_carries_an_http_binding() -> None:
    rpcs = _all_rpcs()
    assert len(rpcs) >= len(FOUNDING_BINDINGS)
    unbound = [m.full_name for m in rpcs if not _rules(m)]
    assert not unbound, f"RPCs without a google.api.http binding: {unbound}"


def test_every_binding_has_a_route_with_the_same_method_and_path(
    bindings: list[Binding], routes: list[Route]
) -> None:
    served = {r.key for r in routes}
    unserved = sorted(f"{b.rpc}: {b.method} {b.path}" for b in bindings if b.key not in served)
    assert not unserved, "bindings the REST shim does not serve:\n" + "\n".join(unserved)


def test_every_api_route_is_bound_to_an_rpc(bindings: list[Binding], routes: list[Route]) -> None:
    assert routes, "the app has no routes under /api/"
    bound = {b.key for b in bindings}
    unbound = sorted(f"{method} {path}" for method, path in {r.key for r in routes} - bound)
    assert not unbound, "routes no google.api.http binding declares:\n" + "\n".join(unbound)


def test_health_is_served_as_system_service_get_health(
    bindings: list[Binding], routes: list[Route]
) -> None:
    [health] = [b for b in bindings if b.rpc == "agentq.v1.SystemService.GetHealth"]
    assert health.key == ("GET", "/health")
    [(_, route)] = _served([health], routes)
    assert route.route.dependant.body_params == []


def _carried_fields(binding: Binding) -> set[str]:
    """The request fields transcoding puts in the body (`body: "*"`) or the query (no body)."""
    fields = {f.name for f in binding.request.fields} - binding.path_variables
    return fields - {field for (rpc, field) in HEADER_FIELDS if rpc == binding.rpc}


def test_a_binding_with_body_star_takes_a_json_body_of_the_non_path_fields(
    bindings: list[Binding], routes: list[Route]
) -> None:
    star = _served([b for b in bindings if b.body == "*"], routes)
    assert {b.rpc for b, _ in star} >= {
        "agentq.v1.AgentService.CreateAgent",
        "agentq.v1.AgentService.Execute",
        "agentq.v1.AdminService.CreateApiKey",
        "agentq.v1.AdminService.SetTenantLimits",
    }
    for binding, route in star:
        non_path = {f.name for f in binding.request.fields} - binding.path_variables
        if not non_path:
            continue  # an empty message: the next test wants no body for it
        model = _body_model(route)
        json_fields = {f.alias or name for name, f in model.model_fields.items()}
        # A field that may also come from a header (Idempotency-Key) may be in
        # the body too, as transcoding's `body: "*"` puts it there.
        assert _carried_fields(binding) <= json_fields <= non_path, (
            f"{binding.rpc}: the body {model.__name__} has {sorted(json_fields)}, "
            f"the request message carries {sorted(non_path)} outside the path"
        )


def _carries_nothing_in_a_body(binding: Binding) -> bool:
    """No body in the binding, or `body: "*"` on a message with nothing outside the path."""
    if not binding.body:
        return True
    return binding.body == "*" and not (
        {f.name for f in binding.request.fields} - binding.path_variables
    )


def test_a_binding_without_a_body_takes_no_json_body(
    bindings: list[Binding], routes: list[Route]
) -> None:
    # `body: "*"` on an empty request message (CreateToken) carries nothing either:
    # its route reads no JSON, so a client need not send `{}`.
    bodiless = _served([b for b in bindings if _carries_nothing_in_a_body(b)], routes)
    assert {b.rpc for b, _ in bodiless} >= {
        "agentq.v1.AgentService.GetAgent",
        "agentq.v1.JobService.GetJob",
        "agentq.v1.SystemService.GetHealth",
        "agentq.v1.AdminService.ListApiKeys",
        "agentq.v1.AdminService.GetTenantLimits",
        "agentq.v1.TokenService.CreateToken",
    }
    for binding, route in bodiless:
        assert route.route.dependant.body_params == [], (
            f"{binding.rpc}: {binding.method} {binding.path} carries no body in the proto, "
            "but its route reads one"
        )


def test_path_and_query_parameters_are_the_request_fields_transcoding_puts_there(
    bindings: list[Binding], routes: list[Route]
) -> None:
    served = _served(bindings, routes)
    assert len(served) >= len(FOUNDING_BINDINGS)
    for binding, route in served:
        dependant = route.route.dependant
        assert {p.alias for p in dependant.path_params} == binding.path_variables, binding.rpc
        query_params = {p.alias for p in dependant.query_params}
        in_query = set() if binding.body == "*" else _carried_fields(binding)
        assert query_params == in_query, (
            f"{binding.rpc}: the route reads the query parameters {sorted(query_params)}, "
            f"the request message carries {sorted(in_query)} in the query"
        )


def test_fields_taken_from_http_headers_are_read_from_those_headers(
    bindings: list[Binding], routes: list[Route]
) -> None:
    by_rpc = {binding.rpc: (binding, route) for binding, route in _served(bindings, routes)}
    for (rpc, field), header in HEADER_FIELDS.items():
        assert rpc in by_rpc, f"{rpc} has no route"
        binding, route = by_rpc[rpc]
        assert field in {f.name for f in binding.request.fields}, (rpc, field)
        headers = {p.alias.lower() for p in route.route.dependant.header_params}
        assert header in headers, f"{rpc}: {field} should come from {header}, not in {headers}"
