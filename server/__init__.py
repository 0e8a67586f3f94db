"""agentq server: the gRPC service, its queue workers and their persistence."""
