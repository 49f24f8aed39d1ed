"""Command-line parsing shared by the programs that take a `--config` file."""

import ast
import os
import re
import sys

from absl import flags

# An argument of a section's optax optimiser, e.g. --config.inner.optimizer_args.b1=0.8.
_OPTIMIZER_ARGUMENT = re.compile(r"--config\.((?:\w+\.)*optimizer_args)\.(\w+)=(.*)", re.DOTALL)


def parse_flags(
    config_flag, argv: list[str], flag_values: flags.FlagValues = flags.FLAGS
) -> list[str]:
    """Parses the command line; a missing config file or key ends the run with one line.

    Config files import their shared base as `configs.common`: the folder holding the
    config file's folder goes on the import path, so a config file works from anywhere.
    `optimizer_args` overrides may name any argument of the section's optimiser, which the
    config does not list: they are set after the config is read (and checked against the
    optimiser's signature by `config_checks.validate`). config_flags reports a bad file or
    key as a Python exception, which absl would print as a traceback.

    Args:
      config_flag: the `config_flags.DEFINE_config_file` holder.
      argv: the command line.
      flag_values: the registry of the program's flags.

    Returns:
      The arguments left after the flags.
    """
    config_files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    if config_files:
        if not os.path.isfile(config_files[-1]):
            sys.exit(f"error: --config={config_files[-1]} does not exist; see configs/.")
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(config_files[-1]))))
    optimizer_arguments = [match for match in map(_OPTIMIZER_ARGUMENT.fullmatch, argv) if match]
    overrides = [arg.split("=")[0] for arg in argv if arg.startswith("--config.")]
    argv = [arg for arg in argv if not _OPTIMIZER_ARGUMENT.fullmatch(arg)]
    # config_flags reads its overrides from sys.argv: the optimiser arguments leave it too.
    sys.argv[:] = [arg for arg in sys.argv if not _OPTIMIZER_ARGUMENT.fullmatch(arg)]
    try:
        remaining = flag_values(argv)
        config = config_flag.value
        for match in optimizer_arguments:
            section = config
            for name in match.group(1).split("."):
                section = section[name]
            with section.unlocked():
                section[match.group(2)] = _literal(match.group(3))
    except flags.Error as error:
        sys.exit(f"error: {error}")
    except (AttributeError, KeyError) as error:
        key = str(error).strip("\"'")
        named = [override for override in overrides if key in override.split(".")]
        sys.exit(f"error: {' '.join(named) or key} names no config key; see configs/common.py.")
    except (TypeError, ValueError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")
    return remaining


def _literal(text: str):
    """A Python literal (number, bool, tuple, ...) from the command line, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
