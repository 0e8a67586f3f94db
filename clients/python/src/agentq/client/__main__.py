"""`python -m agentq.client`: the user commands, as the `agentq` of agentq-client."""

import sys

from agentq.client.cli import main

sys.exit(main())
