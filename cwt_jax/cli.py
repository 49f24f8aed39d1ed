"""Command-line parsing shared by the programs that take a `--config` file."""

import ast
import difflib
import importlib.util
import os
import re
import sys

import ml_collections
from absl import flags
from flax import traverse_util

# Overrides set once the config is read, whatever the type of the value they replace: an
# argument of a section's optax optimiser (--config.inner.optimizer_args.b1=0.8), which the
# config does not list, and model.layers, a depth or four block counts in either config.
_LATE_OVERRIDE = re.compile(
    r"--config\.((?:\w+\.)*optimizer_args\.\w+|model\.layers)=(.*)", re.DOTALL
)


def parse_flags(
    config_flag, argv: list[str], flag_values: flags.FlagValues = flags.FLAGS
) -> list[str]:
    """Parses the command line; a missing config file or key ends the run with one line.

    Config files import their shared base as `configs.common`: the folder holding the
    config file's folder goes on the import path, so a config file works from anywhere.
    `optimizer_args` overrides may name any argument of the section's optimiser, which the
    config does not list, and `model.layers` may be a depth where the config holds block
    counts or the reverse: both are set after the config is read, as Python literals, the
    last of repeated ones winning (optimiser arguments are checked against the optimiser's
    signature by `config_checks.validate`). config_flags reports a bad file or key as a
    Python exception, which absl would print as a traceback.

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
    late_overrides = [match for match in map(_LATE_OVERRIDE.fullmatch, argv) if match]
    overrides = [arg.split("=")[0] for arg in argv if arg.startswith("--config.")]
    argv = [arg for arg in argv if not _LATE_OVERRIDE.fullmatch(arg)]
    # config_flags reads its overrides from sys.argv: the late ones leave it too.
    sys.argv[:] = [arg for arg in sys.argv if not _LATE_OVERRIDE.fullmatch(arg)]
    try:
        remaining = flag_values(argv)
        config = config_flag.value
        for match in late_overrides:
            *sections, key = match.group(1).split(".")
            section = config
            for name in sections:
                section = section[name]
            with section.unlocked():
                section[key] = _literal(match.group(2))
    except flags.Error as error:
        sys.exit(f"error: {error}")
    except (AttributeError, KeyError):
        sys.exit(f"error: {_unknown_override(config_files[-1], overrides)}")
    except (TypeError, ValueError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")
    return remaining


def config_lines(config: ml_collections.ConfigDict) -> str:
    """Every key of `config` with its value, one `--config.KEY=VALUE` line each, in order."""
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return "\n".join(f"--config.{key}={value!r}" for key, value in flat.items())


def _unknown_override(config_file: str, overrides: list[str]) -> str:
    """The sentence naming the first `--config.a.b` override that names no key of the file.

    Args:
      config_file: the `--config` file, whose `get_config()` is read again here.
      overrides: the `--config.a.b` parts of the command line, in order.
    """
    spec = importlib.util.spec_from_file_location("_config_file", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for override in overrides:
        section, path = config, override.removeprefix("--config.").split(".")
        for depth, name in enumerate(path):
            if not isinstance(section, ml_collections.ConfigDict):
                break
            if name not in section:
                close = difflib.get_close_matches(name, list(section), n=1)
                if close:
                    meant = ".".join([*path[:depth], close[0], *path[depth + 1 :]])
                    hint = f"did you mean --config.{meant}?"
                else:
                    hint = "see configs/common.py for the keys."
                return f"{override} names no config key; {hint}"
            section = section[name]
    return f"{' '.join(overrides)} names no config key; see configs/common.py for the keys."


def _literal(text: str):
    """A Python literal (number, bool, tuple, ...) from the command line, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
