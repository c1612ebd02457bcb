"""User-error types shared by every layer.

Library code raises these; only the command line turns them into one ``error:`` line and exit
code 2. They live here, in a leaf module (no project imports), so that nothing below the
command line imports it. The old homes re-export them (``config.ConfigError``,
``data.errors.DataError``, ``checkpoint.CheckpointError``, ``grammar.GrammarError``,
``registry.UnknownNameError``, ``cli.UsageError``).
"""

from __future__ import annotations


class UsageError(Exception):
    """A user mistake (a flag, a name, a path); printed as one line, exit code 2."""


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the key and the problem."""


class DataError(ValueError):
    """An input data source is missing, unreadable or holds no usable record.

    The message always names the input (a path or a data set name) and what is
    wrong with it, on a single line (newlines passed in are folded into spaces).
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class CheckpointError(ValueError):
    """A missing, truncated, corrupted or incompatible checkpoint."""


class GrammarError(ValueError):
    """A string cannot be tokenized or parsed, or a derivation is invalid or too long."""


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


# Exception types that are the user's mistake: one line, exit code 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ConfigError, DataError, CheckpointError, GrammarError,
                                                UnknownNameError)
