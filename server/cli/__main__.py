"""`python -m server.cli`: the same as the `agentq` command."""

from server.cli import main

raise SystemExit(main())
