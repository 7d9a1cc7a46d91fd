"""The `hashveil` command: one verb per pipeline stage, each a thin shell over a Python function.

The service provider's verbs live in service_commands.py and collection_commands.py, the user's
in user_commands.py and client_command.py, the evaluation in evaluate_command.py; all register on
the one group defined in group.py.
"""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: its threads sleep when idle instead of spinning. A server shares the
# CPU between torch and its request threads (and a user's machine runs other programs); spinning
# threads then starve the others, and a forward waits for a descheduled one. On a busy 2-core
# machine, 8 single-image forwards of the default model took 38 s spinning and 0.43 s passive.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hashveil import (  # noqa: E402, F401 (importing registers the verbs)
    client_command,
    collection_commands,
    evaluate_command,
    service_commands,
    user_commands,
)
from hashveil.group import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
