"""The errors a user can cause: each message is one sentence naming the file, key or value.

The command-line programs print them as one line and exit non-zero; every other
exception is a bug and keeps its traceback. Warnings are plain lines too (`warn`).
"""

import sys


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(ValueError):
    """A dataset, list file, image or episode that cannot be read or used."""


class ConversionError(ValueError):
    """A checkpoint that cannot be read as one, or does not fit the model it is read for."""


USER_ERRORS = (
    ConfigError,
    DataError,
    ConversionError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
)


def warn(message: str) -> None:
    """Shows the user one `warning: <message>` line on stderr; the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
