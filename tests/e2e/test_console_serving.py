"""How the shim serves the web console: its files with their media types and a strict
Content-Security-Policy, nothing from another host, and no console at all when it is off.

The console in a browser is tests/e2e/test_console.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import httpx
import pytest

from rest_shim.console import MEDIA_TYPES
from tests.e2e.harness import RestThread, running_rest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "rest_shim" / "console"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_REFERENCED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
# A module's static imports, `import x from "./y.js"` and `export {..} from "./y.js"`,
# minified or not.
_IMPORTED = re.compile(r"""\b(?:import|export)\b[^;"']*?\bfrom\s*["']([^"']+)["']""")
NOT_FOUND = {
    "detail": "Not found",
    "error": {"code": "NOT_FOUND", "message": "Not found", "status": 404},
}


def _fetch_all(shim: RestThread) -> dict[str, httpx.Response]:
    """The page and every file it loads, through stylesheets and module imports."""
    fetched: dict[str, httpx.Response] = {}
    waiting = [shim.url + "/console"]
    while waiting:
        url = waiting.pop()
        if url in fetched:
            continue
        response = httpx.get(url, timeout=10)
        fetched[url] = response
        found = _REFERENCED.findall(response.text) + _IMPORTED.findall(response.text)
        found += re.findall(r"""url\(["']?([^"')]+)["']?\)""", response.text)
        # A reference within the page (`#/jobs/...`, the console's routes) loads nothing.
        waiting += [urldefrag(urljoin(url, reference)).url for reference in found]
    return fetched


def test_the_page_and_every_file_it_loads_have_their_media_type_and_the_policy(
    shim: RestThread,
) -> None:
    fetched = _fetch_all(shim)

    # The page, its styles, its icon, and the modules of the app and the libraries.
    assert len(fetched) >= 12, sorted(fetched)
    assert fetched[shim.url + "/console"].headers["content-type"] == "text/html; charset=utf-8"
    script = fetched[shim.url + "/console/app.js"]
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    for url, response in fetched.items():
        path = url.removeprefix(shim.url)
        suffix = ".html" if path == "/console" else path[path.rindex(".") :]
        assert path.startswith("/console"), url
        assert response.status_code == 200, url
        assert response.headers["content-type"] == MEDIA_TYPES[suffix], url
        assert response.headers["content-security-policy"] == POLICY, url
        assert response.headers["x-content-type-options"] == "nosniff", url
        assert response.headers["x-frame-options"] == "DENY", url
        assert response.headers["referrer-policy"] == "no-referrer", url
        assert "set-cookie" not in response.headers, url


def test_the_page_has_no_inline_script_or_style_and_names_no_other_host(
    shim: RestThread,
) -> None:
    page = httpx.get(shim.url + "/console", timeout=10).text
    own = [
        httpx.get(url, timeout=10).text
        for url in _fetch_all(shim)
        if "/vendor/" not in url  # the libraries' files are as published (package-lock.json)
    ]

    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="module" src="/console/app.js">']
    assert "<style" not in page and " style=" not in page
    for text in own:
        # An SVG names its XML namespace with a URL, which is never fetched.
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?:|//[a-z0-9-]+\.[a-z]", text, re.IGNORECASE)


def test_a_browser_asks_again_and_keeps_its_copy_while_the_file_is_the_same(
    shim: RestThread,
) -> None:
    first = httpx.get(shim.url + "/console/app.js", timeout=10)
    etag = first.headers["etag"]

    again = httpx.get(shim.url + "/console/app.js", headers={"If-None-Match": etag}, timeout=10)
    other = httpx.get(shim.url + "/console/api.js", headers={"If-None-Match": etag}, timeout=10)

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["content-security-policy"] == POLICY
    assert other.status_code == 200
    assert other.headers["etag"] != etag


def test_a_file_that_is_not_the_consoles_is_the_contract_404(shim: RestThread) -> None:
    # The license files are in the package beside the libraries, but are not served.
    assert (CONSOLE / "static" / "vendor" / "LICENSE.preact").is_file()
    for path in ("/console/no-such.js", "/console/vendor/LICENSE.preact", "/console/../app.py"):
        response = httpx.get(shim.url + path, timeout=10)

        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND, path


def test_the_console_is_not_part_of_the_api_document(shim: RestThread) -> None:
    document = httpx.get(shim.url + "/openapi.json", timeout=10).json()

    assert not [path for path in document["paths"] if path.startswith("/console")]


def test_with_agentq_console_off_there_is_no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTQ_CONSOLE", "off")
    # The console's files never call the server, so no server is needed to serve them.
    with running_rest("127.0.0.1:9") as shim:
        for path in ("/console", "/console/", "/console/app.js"):
            response = httpx.get(shim.url + path, timeout=10)

            assert response.status_code == 404, path
            assert response.json() == NOT_FOUND, path
        assert httpx.get(shim.url + "/openapi.json", timeout=10).status_code == 200


def test_the_package_data_holds_every_file_of_the_console() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["rest_shim.console"]
    packaged = {path for pattern in patterns for path in CONSOLE.glob(pattern) if path.is_file()}

    files = {path for path in (CONSOLE / "static").rglob("*") if path.is_file()}
    assert files, CONSOLE
    assert files <= packaged, sorted(str(path) for path in files - packaged)
