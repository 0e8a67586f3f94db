"""gRPC face of agentq: servicers, the guard interceptor, the server factory."""
