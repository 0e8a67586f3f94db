"""Alembic migrations of the agentq schema."""
