"""A real browser for the web console's tests: Debian's Chromium driven by Playwright.

Playwright's own browser download is not reachable from this project's machines, so the
tests drive the distribution's Chromium (`apt-get install chromium`; .ci/run installs it).
Without it the tests skip, and fail when CI is set, as tests/e2e/node_helpers.py does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests.e2e.node_helpers import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    # The tests run as root, where Chromium's sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    # Without these Chromium keeps calling home (updates, sync, field trials) on a
    # network that has no route out, and slows itself down waiting for the answers.
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}


def chromium() -> Iterator[Browser]:
    """Headless Chromium, closed once the generator is: a fixture's `yield from`."""
    if not CHROMIUM.exists():
        unavailable(
            f"{CHROMIUM} is needed for the console's browser tests: apt-get install chromium"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Problems:
    """What went wrong inside a page: uncaught errors, and console errors, which is where
    Chromium reports what the Content-Security-Policy blocked."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("pageerror", self._on_error)
        page.on("console", self._on_console)

    def _on_error(self, error: Error) -> None:
        self.seen.append(f"uncaught: {error}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(f"console: {message.text}")
