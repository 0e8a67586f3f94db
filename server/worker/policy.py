"""How often and how soon a failed attempt is tried again, and how long one may run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, backoff, the time limit of one attempt and its lease."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    time_limit_s: float = 120.0
    lease_grace_s: float = 15.0

    def delay_after(self, attempt: int) -> float:
        """Exponential backoff: base, 2 x base, 4 x base, ... capped."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    @property
    def lease_s(self) -> float:
        """How long a running attempt may go before it is taken for lost."""
        return self.time_limit_s + self.lease_grace_s
