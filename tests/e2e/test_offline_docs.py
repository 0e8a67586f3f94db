"""The interactive docs work offline: every asset of /docs and /redoc comes from the shim."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx
import pytest

from tests.e2e.harness import RestThread

# Every URL an HTML page makes the browser load: scripts, styles, icons.
_REFERENCED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def _referenced(page: str) -> list[str]:
    return _REFERENCED.findall(page)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_page_references_no_url_outside_the_shim(rest: RestThread, page: str) -> None:
    response = httpx.get(rest.url + page, timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert not re.search(r"https?:|//[a-z]", response.text, re.IGNORECASE), response.text
    assert len(_referenced(response.text)) >= 2  # at least the script and an icon or style


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_of_the_docs_page_is_served_with_its_content_type(
    rest: RestThread, page: str
) -> None:
    html = httpx.get(rest.url + page, timeout=10).text

    for reference in _referenced(html):
        asset = httpx.get(urljoin(rest.url + page, reference), timeout=10)
        suffix = reference[reference.rindex(".") :]
        assert asset.status_code == 200, reference
        assert asset.headers["content-type"].split(";")[0] == _CONTENT_TYPES[suffix], reference
        assert int(asset.headers["content-length"]) > 1000, reference
        assert asset.headers["x-request-id"]


def test_the_swagger_ui_script_is_a_version_that_reads_openapi_3_1(rest: RestThread) -> None:
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders only from version 5 on.
    spec = httpx.get(rest.url + "/openapi.json", timeout=10).json()
    html = httpx.get(rest.url + "/docs", timeout=10).text
    script = next(r for r in _referenced(html) if r.endswith("swagger-ui-bundle.js"))

    bundle = httpx.get(urljoin(rest.url, script), timeout=10).text

    assert spec["openapi"].startswith("3.1")
    assert "OpenAPI 3.1" in bundle or "openapi31" in bundle.lower()


def test_an_unknown_docs_asset_is_the_contract_404(rest: RestThread) -> None:
    html = httpx.get(rest.url + "/docs", timeout=10).text
    script = next(r for r in _referenced(html) if r.endswith(".js"))
    missing = script.rsplit("/", 1)[0] + "/no-such-file.js"

    response = httpx.get(urljoin(rest.url, missing), timeout=10)

    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not found",
        "error": {"code": "NOT_FOUND", "message": "Not found", "status": 404},
    }
