"""The `hashveil` command: one verb per pipeline stage, each a thin shell over a Python function.

The service provider's verbs live in service_commands.py, the user's in user_commands.py, the
evaluation in evaluate_command.py; all register on the one group defined in group.py.
"""

from __future__ import annotations

import sys

from hashveil import evaluate_command, service_commands, user_commands  # noqa: F401 (registers the verbs)
from hashveil.group import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
