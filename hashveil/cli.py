"""The `hashveil` command: one verb per pipeline stage, each a thin shell over a Python function.

The service provider's verbs live in service_commands.py, the user's in user_commands.py and
client_command.py; all register on the one group defined in group.py.
"""

from __future__ import annotations

import sys

from hashveil import (  # noqa: F401 (importing registers the verbs)
    client_command,
    collection_commands,
    service_commands,
    user_commands,
)
from hashveil.group import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
