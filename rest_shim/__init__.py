"""agentq REST shim: vex-api-compatible JSON routes over the agentq gRPC API."""
