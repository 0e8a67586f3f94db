"""The bare-library baselines agentq is compared with, each a small standalone program."""
