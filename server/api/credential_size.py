"""The size limit of credentials, checked before any other, and the transport's room for it."""

from __future__ import annotations

from collections.abc import Sequence

from server.errors import CredentialsTooLarge

# The metadata that carries credentials (docs/contract.md §1).
CREDENTIAL_KEYS = frozenset({"authorization", "x-api-key", "x-admin-api-key"})
# Every copy of every credential together. agentq's own JWTs and keys are well under 1 KiB;
# a larger credential is refused unread rather than parsed, looked up or rate limited.
MAX_CREDENTIAL_BYTES = 8 * 1024
# The transport's limit on a call's metadata in all (grpc.max_metadata_size and
# grpc.absolute_max_metadata_size). grpcio's defaults (8 KiB, then a random share refused
# up to 16 KiB) refuse an oversized credential as RESOURCE_EXHAUSTED, the code of rate
# limiting, before agentq sees it; this leaves room for the check below to answer first.
MAX_METADATA_BYTES = 128 * 1024


def check_credential_size(metadata: Sequence[tuple[str, str | bytes]]) -> None:
    """Refuse the call when its credentials together exceed MAX_CREDENTIAL_BYTES."""
    size = sum(len(value) for key, value in metadata if key in CREDENTIAL_KEYS)
    if size > MAX_CREDENTIAL_BYTES:
        raise CredentialsTooLarge(f"Credentials exceed the limit of {MAX_CREDENTIAL_BYTES} bytes")
