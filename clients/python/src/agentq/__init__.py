"""agentq: the generated gRPC stubs (`agentq.v1`) and the Python SDK (`agentq.client`)."""
