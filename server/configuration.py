"""The error that stops a process at start: a setting it cannot run with."""

from __future__ import annotations


class ConfigurationError(Exception):
    """The settings cannot run a server; the message says what to change.

    The entry point prints the message as one line and exits with status 2.
    """
