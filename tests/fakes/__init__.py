"""Fakes of the service's edges, one module per port: the clock, the queue, a provider."""
