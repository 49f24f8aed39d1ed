"""Entry point: parses the flags, loads the config and runs it (`experiment.run`).

  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py --workdir=DIR \
      [--config.mode=eval] [--config.key=value ...]
  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py [--config.key=value ...] \
      --print_config   # every key with its value, overrides applied; runs nothing

A user's mistake (a missing file, a checkpoint that does not fit, an unknown optimiser,
an unwritable work dir) ends the run before any work with one line on stderr.
"""

import sys
from collections.abc import Sequence

from absl import app, flags, logging

from cwt_jax import cli, errors, experiment


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags: defined only when this module runs as a program."""
    cli.define_config_flag(flag_values)
    flags.DEFINE_string(
        "workdir",
        None,
        "Directory for checkpoints, metrics and results.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "print_config",
        False,
        "Print every config key with its value, as --config.KEY=VALUE lines with the "
        "overrides applied, and exit without running anything.",
        flag_values=flag_values,
    )


def main(argv: Sequence[str], flag_values: flags.FlagValues) -> None:
    """Runs the configured mode."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config, workdir = flag_values.config, flag_values.workdir
    if flag_values.print_config:
        print(cli.config_lines(config))
        return
    if workdir is None:
        raise app.UsageError("Flag --workdir must have a value other than None.")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    try:
        experiment.run(config, workdir, report=print)
    except errors.USER_ERRORS as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: rerun the same command to resume from {workdir}'s last checkpoint.",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    cli.run(main, define_flags)
