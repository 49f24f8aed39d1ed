"""Command-line parsing shared by the four programs (main, predict, convert, benchmark).

Each program defines its flags in a `define_flags(flag_values)` of its own, called only
when it runs as a program, and runs with `cli.run(main, define_flags)`: the flags are
parsed by `parse_flags` and a bad command line ends the program with one line.
"""

import ast
import contextlib
import difflib
import functools
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from flax import traverse_util
from ml_collections import config_flags

# Overrides set once the config is read, whatever the type of the value they replace: an
# argument of a section's optax optimiser (--config.inner.optimizer_args.b1=0.8), which the
# config does not list, and model.layers, a depth or four block counts in either config.
_LATE_OVERRIDE = re.compile(
    r"--config\.((?:\w+\.)*optimizer_args\.\w+|model\.layers|data\.fold)=(.*)", re.DOTALL
)


def run(
    main: Callable[[Sequence[str], flags.FlagValues], None],
    define_flags: Callable[[flags.FlagValues], None],
) -> None:
    """Runs a program: defines its flags, parses the command line and calls `main`.

    Args:
      main: `main(argv, flag_values)`, given the arguments left after the flags.
      define_flags: defines the program's flags on the registry it is given.
    """
    define_flags(flags.FLAGS)
    app.run(functools.partial(main, flag_values=flags.FLAGS), flags_parser=parse_flags)


def define_config_flag(flag_values: flags.FlagValues) -> None:
    """The `--config` flag of the programs that run a config file, required."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file.", lock_config=True, flag_values=flag_values
    )
    flags.mark_flag_as_required("config", flag_values=flag_values)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """Parses the command line; a bad flag, config file or key ends the run with one line.

    A missing or invalid flag is reported on one line (absl gives one per missing flag).
    A tuple of bare words, `--config.eval.objectives=(support,repri)`, is read as a tuple
    of strings.
    For the programs with a `--config` flag (`define_config_flag`): config files
    import their shared base as `configs.common`: the folder holding the
    config file's folder goes on the import path, so a config file works from anywhere.
    `optimizer_args` overrides may name any argument of the section's optimiser, which the
    config does not list, `model.layers` may be a depth where the config holds block
    counts or the reverse, and `data.fold` a fold index or `all`: these are set after the
    config is read, as Python literals (else strings), the
    last of repeated ones winning (optimiser arguments are checked against the optimiser's
    signature by `config_checks.validate`). config_flags reports a bad file or key as a
    Python exception, which absl would print as a traceback.

    Args:
      argv: the command line.
      flag_values: the registry of the program's flags.

    Returns:
      The arguments left after the flags.
    """
    if "config" not in flag_values:
        try:
            return flag_values(argv)
        except flags.Error as error:
            sys.exit(f"error: {' '.join(str(error).splitlines())}")
    config_files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    if config_files:
        if not os.path.isfile(config_files[-1]):
            sys.exit(f"error: --config={config_files[-1]} does not exist; see configs/.")
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(config_files[-1]))))
    argv = [_quote_bare_words(arg) for arg in argv]
    sys.argv[:] = [_quote_bare_words(arg) for arg in sys.argv]
    late_overrides = [match for match in map(_LATE_OVERRIDE.fullmatch, argv) if match]
    overrides = [arg.split("=")[0] for arg in argv if arg.startswith("--config.")]
    argv = [arg for arg in argv if not _LATE_OVERRIDE.fullmatch(arg)]
    # config_flags reads its overrides from sys.argv: the late ones leave it too.
    sys.argv[:] = [arg for arg in sys.argv if not _LATE_OVERRIDE.fullmatch(arg)]
    try:
        remaining = flag_values(argv)
        config = flag_values["config"].value
        for match in late_overrides:
            *sections, key = match.group(1).split(".")
            section = config
            for name in sections:
                section = section[name]
            # data.fold holds an index or "all": the one late key of either type.
            typed = (
                section.ignore_type() if match.group(1) == "data.fold" else contextlib.nullcontext()
            )
            with section.unlocked(), typed:
                section[key] = _literal(match.group(2))
    except flags.Error as error:
        sys.exit(f"error: {' '.join(str(error).splitlines())}")
    except (AttributeError, KeyError):
        sys.exit(f"error: {_unknown_override(config_files[-1], overrides)}")
    except (TypeError, ValueError, OSError, ImportError) as error:
        sys.exit(f"error: {error}")
    return remaining


def base_config() -> ml_collections.ConfigDict:
    """`configs/common.py`'s `base()`: the defaults of the programs without a `--config`.

    Read from the source tree cwt-jax is installed from (`pip install -e .`), beside the
    package.
    """
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "common.py")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} does not exist; install cwt-jax from its source tree.")
    return _module(path, "_base_config").base()


def _module(path: str, name: str):
    """The Python module of a file, imported under `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_lines(config: ml_collections.ConfigDict) -> str:
    """Every key of `config` with its value, one `--config.KEY=VALUE` line each, by key."""
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return "\n".join(f"--config.{key}={value!r}" for key, value in flat.items())


def _unknown_override(config_file: str, overrides: list[str]) -> str:
    """The sentence naming the first `--config.a.b` override that names no key of the file.

    Args:
      config_file: the `--config` file, whose `get_config()` is read again here.
      overrides: the `--config.a.b` parts of the command line, in order.
    """
    config = _module(config_file, "_config_file").get_config()
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


def _quote_bare_words(arg: str) -> str:
    """`--config.key=(a,b)` as `--config.key=('a','b')`: a tuple's bare words as strings.

    config_flags reads a tuple override as a Python literal, which `(support,repri)` or
    `(1.0,auto,auto)` is not; items that are literals stay as they are.
    """
    match = re.fullmatch(r"(--config\.[\w.]+=)\((.*)\)", arg, re.DOTALL)
    if match is None:
        return arg
    try:
        ast.literal_eval(f"({match.group(2)})")
        return arg
    except (ValueError, SyntaxError):
        pass
    items = [item.strip() for item in match.group(2).split(",")]
    if not all(re.fullmatch(r"[\w.+-]*", item) for item in items):
        return arg
    quoted = [repr(_literal(item)) for item in items if item]
    return f"{match.group(1)}({', '.join(quoted)}{',' if len(quoted) == 1 else ''})"


def _literal(text: str):
    """A Python literal (number, bool, tuple, ...) from the command line, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
