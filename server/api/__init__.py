"""gRPC face of agentq: servicers, the auth and error interceptor, the server factory."""
