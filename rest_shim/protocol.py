"""uvicorn's HTTP protocol, with the contract's error body for requests it cannot parse.

uvicorn answers bytes that are not HTTP (a broken request line, a bad header, a control
byte in the path) itself, before any ASGI app sees them, as a plain-text 400 without
`X-Request-ID`. It has no setting for that answer, so this subclass of its httptools
protocol, passed as `uvicorn.Config(http=...)`, writes the one error body of
docs/contract.md §2 instead. It overrides `send_400_response`, which both of uvicorn's
HTTP/1.1 protocols call for exactly this case; tests/e2e/test_hardening.py sends such
requests over a raw socket and fails if a uvicorn upgrade stops calling it.
"""

from __future__ import annotations

import uuid

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rest_shim.access_log import log_request
from rest_shim.errors import error_response
from rest_shim.middleware import REQUEST_ID_HEADER

MESSAGE = "Invalid HTTP request"


class ContractHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose 400 for an unparsable request is JSON with a request id."""

    def send_400_response(self, msg: str) -> None:
        """Answer 400 BAD_REQUEST and close: the rest of the connection cannot be read."""
        # The request's own X-Request-ID, if it sent one, cannot be trusted from bytes
        # that did not parse, so the answer always carries a new one.
        request_id = str(uuid.uuid4())
        response = error_response(
            "BAD_REQUEST", MESSAGE, headers={REQUEST_ID_HEADER: request_id, "Connection": "close"}
        )
        # uvicorn's own headers (Date; no Server, see serving.py), then the response's.
        headers = [*self.server_state.default_headers, *response.raw_headers]
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        content += [name + b": " + value + b"\r\n" for name, value in headers]
        content += [b"\r\n", bytes(response.body)]
        self.transport.write(b"".join(content))
        self.transport.close()
        # No method or route could be read; the line still says a request was refused.
        log_request(
            method="-",
            route="-",
            status=400,
            duration_s=0.0,
            request_id=request_id,
            tenant="-",
            matched=False,
        )
