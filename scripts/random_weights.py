"""Writes randomly initialised PSPNet and CWT checkpoints of a config.

For timing the evaluation pipeline at full size without trained weights (the time does
not depend on them):

  python scripts/random_weights.py --config=configs/pascal_fold0_1shot.py --output_dir=DIR
  python -m cwt_jax.main --config=... --config.mode=eval \
      --config.init.backbone=DIR/backbone --config.init.cwt=DIR/cwt

The PSPNet's batch-norm statistics are the initial ones (mean 0, variance 1).
"""

import os

import jax
from absl import app, flags
from ml_collections import config_flags

from cwt_jax import cli, models, seeds
from cwt_jax.models import cwt
from cwt_jax.weights import checkpoints

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to create for both checkpoints.")


def main(argv) -> None:
    """Writes `<output_dir>/backbone` and `<output>/cwt`."""
    del argv
    config = _CONFIG.value
    model = models.from_config(config.model)
    backbone_key, cwt_key = jax.random.split(seeds.key(config.seed, seeds.Stream.INIT))
    checkpoints.save_tree(
        os.path.join(_OUTPUT_DIR.value, "backbone"), models.init_variables(model, backbone_key)
    )
    params = cwt.init(cwt_key, model.feature_channels, config.cwt.heads)
    checkpoints.save_tree(os.path.join(_OUTPUT_DIR.value, "cwt"), {"params": params})
    print(f"Wrote random backbone and cwt checkpoints of the config to {_OUTPUT_DIR.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "output_dir"])
    app.run(main, flags_parser=cli.parse_flags)
