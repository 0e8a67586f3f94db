"""The web console at /console: static files that call the public REST API (README.md, Console).

The page is a client like any other: it signs in with the caller's own JWT or API key,
kept in the browser's session storage and sent as `Authorization: Bearer`, so it sees what
that credential may see and nothing more. The shim only serves its files, read once from
the package (`static/`) so an installed wheel serves them offline. Every answer carries a
Content-Security-Policy that lets the page load scripts, styles and data from this origin
only, with no inline script, and talk to no other host.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

PATH = "/console"
# The files a browser may ask for, by suffix; any other file of static/ (the vendored
# libraries' licenses) is in the package but not served.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# uPlot draws on a canvas and sizes it through element.style, which CSP allows without
# 'unsafe-inline' (it governs style attributes and elements in markup, not the CSSOM).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The files change with the installed version only: the browser keeps them, and asks
    # each time whether its copy is still the one (ETag), so an upgrade's page never runs
    # with the old one's scripts.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class ConsoleFile:
    """A file as served: its bytes, media type and entity tag."""

    content: bytes
    media_type: str
    etag: str

    def answer(self, request: Request) -> Response:
        """The file, or 304 when the browser's copy is this one."""
        headers = {**HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


def read_files(root: Traversable) -> dict[str, ConsoleFile]:
    """Every servable file under `root`, by its path relative to it."""
    found: dict[str, ConsoleFile] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
            if suffix in MEDIA_TYPES:
                content = entry.read_bytes()
                etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
                found[prefix + entry.name] = ConsoleFile(content, MEDIA_TYPES[suffix], etag)

    walk(root, "")
    return found


def install(app: FastAPI) -> None:
    """Serve the console: the page at /console, its files under /console/."""
    files = read_files(resources.files(__name__) / "static")
    page = files["index.html"]

    async def console_page(request: Request) -> Response:
        return page.answer(request)

    async def console_file(request: Request, path: str) -> Response:
        found = files.get(path) if path else page
        if found is None:
            raise HTTPException(status_code=404)  # the contract's 404 body (handlers.py)
        return found.answer(request)

    app.add_api_route(PATH, console_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        f"{PATH}/{{path:path}}", console_file, methods=["GET"], include_in_schema=False
    )
