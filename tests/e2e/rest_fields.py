"""The fields of the REST response bodies, as docs/contract.md §3 and access control promise
them: what a live response carries and what the OpenAPI document must list."""

from __future__ import annotations

HEALTH_FIELDS = {"status", "version", "timestamp", "db_type"}
AGENT_FIELDS = {
    "id",
    "name",
    "role",
    "max_depth",
    "spawn_shadow",
    "generation",
    "fitness",
    "created_at",
    # The agent's own verification prompts, null for none (issue 13).
    "verification",
}
ACK_FIELDS = {
    "agent_id",
    "job_id",
    "status",
    "response",
    "verified",
    "confidence",
    "context_hash",
    "merkle_root",
    "latency_ms",
}
# A job as vex-api clients know it.
VEX_JOB_FIELDS = {
    "job_id",
    "agent_id",
    "status",
    "result",
    "error",
    "queued_at",
    "started_at",
    "completed_at",
    "attempts",
}
# Added by agentq for sub-agent executions; vex-api clients ignore them.
JOB_FIELDS = VEX_JOB_FIELDS | {"parent_job_id", "depth"}
RESULT_FIELDS = {
    "job_id",
    "agent_id",
    "success",
    "response",
    "tokens_used",
    "completed_at",
    "error",
    "prompt",
    "context_hash",
    "merkle_root",
    "verified",
    "confidence",
    # How many rounds adversarial verification debated (issue 13).
    "debate_rounds",
    # The conversation context the job's turn was stored in (vex-api's field).
    "new_context_id",
}
# An API key's metadata (issue 5): never the key itself, except once when it is created.
API_KEY_FIELDS = {
    "id",
    "tenant_id",
    "name",
    "role",
    "scopes",
    "prefix",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "tier",
}
LIMITS_FIELDS = {
    "tenant_id",
    "tier",
    "rate_per_second",
    "burst",
    "max_unfinished_jobs",
    "per_minute",
    "per_day",
}
TOKEN_FIELDS = {"access_token", "token_type", "expires_in", "expires_at"}
