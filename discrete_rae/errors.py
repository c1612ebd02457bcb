"""User-error types shared by every layer.

Library code raises these; only the command line turns them into one ``error:`` line and exit
code 2. They live here, in a leaf module, so that nothing below the command line imports it.
"""

from __future__ import annotations


class UsageError(Exception):
    """A user mistake (a flag, a name, a path); printed as one line, exit code 2."""
