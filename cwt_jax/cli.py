"""Command-line parsing shared by the programs that take a `--config` file."""

import os
import sys

from absl import flags


def parse_flags(config_flag, argv: list[str]) -> list[str]:
    """Parses the command line; a missing config file or key ends the run with one line.

    config_flags reports both as Python exceptions (during parsing, or when the config is
    first read), which absl would print as tracebacks.

    Args:
      config_flag: the `config_flags.DEFINE_config_file` holder.
      argv: the command line.

    Returns:
      The arguments left after the flags.
    """
    config_files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    if config_files and not os.path.isfile(config_files[-1]):
        sys.exit(f"error: --config={config_files[-1]} does not exist; see configs/.")
    try:
        remaining = flags.FLAGS(argv)
        config_flag.value  # noqa: B018 (loads the config file now)
    except flags.Error as error:
        sys.exit(f"error: {error}")
    except (AttributeError, KeyError) as error:
        key = str(error).strip("\"'")
        named = [arg.split("=")[0] for arg in argv if arg.startswith("--config.") and key in arg]
        sys.exit(f"error: {' '.join(named) or key} names no config key; see configs/common.py.")
    except (TypeError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    return remaining
