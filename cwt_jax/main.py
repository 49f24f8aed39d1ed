"""Entry point: parses the flags, loads the config and runs it (`experiment.run`).

  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py --workdir=DIR \
      [--config.mode=eval] [--config.key=value ...]
  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py [--config.key=value ...] \
      --print_config   # every key with its value, overrides applied; runs nothing

A user's mistake (a missing file, a checkpoint that does not fit, an unknown optimiser,
an unwritable work dir) ends the run before any work with one line on stderr.
"""

import functools
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cwt_jax import cli, errors, experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config",
    False,
    "Print every config key with its value, as --config.KEY=VALUE lines with the overrides "
    "applied, and exit without running anything.",
)


def main(argv) -> None:
    """Runs the configured mode."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _PRINT_CONFIG.value:
        print(cli.config_lines(_CONFIG.value))
        return
    if _WORKDIR.value is None:
        raise app.UsageError("Flag --workdir must have a value other than None.")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    try:
        experiment.run(_CONFIG.value, _WORKDIR.value)
    except errors.USER_ERRORS as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: rerun the same command to resume from {_WORKDIR.value}'s last "
            "checkpoint.",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=functools.partial(cli.parse_flags, _CONFIG))
