"""Command line: converts a PyTorch checkpoint (.pth) to an orbax checkpoint.

  python -m cwt_jax.convert --format=pspnet --layers=50 --input=model.pth --output=DIR
  python -m cwt_jax.convert --format=dinov2 --input=dinov2_vitb14_pretrain.pth --output=DIR

The conversion itself is `cwt_jax.weights.pytorch`'s; a user's mistake (a missing file,
a checkpoint of another architecture, an existing output) ends the command with one line.
"""

import sys
from collections.abc import Sequence

from absl import flags

from cwt_jax import cli
from cwt_jax.errors import USER_ERRORS
from cwt_jax.weights import checkpoints, pytorch


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags: defined only when this module runs as a program."""
    flags.DEFINE_enum(
        "format",
        None,
        ["pspnet", "cwt", "resnet", "dinov2"],
        "Kind of checkpoint.",
        flag_values=flag_values,
    )
    flags.DEFINE_string("input", None, "PyTorch .pth file.", flag_values=flag_values)
    flags.DEFINE_string(
        "output", None, "Orbax checkpoint directory to create.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "layers",
        "50",
        "ResNet depth (50, 101) or four comma-separated counts.",
        flag_values=flag_values,
    )
    flags.mark_flags_as_required(["format", "input", "output"], flag_values=flag_values)


def main(argv: Sequence[str], flag_values: flags.FlagValues) -> None:
    """Converts one .pth file and writes it as an orbax checkpoint."""
    del argv
    layers = [int(count) for count in flag_values.layers.split(",")]
    layers = layers[0] if len(layers) == 1 else layers
    try:
        if flag_values.format == "pspnet":
            tree = pytorch.load_pspnet(flag_values.input, layers)
        elif flag_values.format == "dinov2":  # the architecture is read from the shapes
            tree = pytorch.load_dinov2(flag_values.input)[1]
        elif flag_values.format == "resnet":
            tree = pytorch.load_resnet(flag_values.input, layers)
        else:
            tree = {"params": pytorch.load_cwt(flag_values.input)}
        checkpoints.save_tree(flag_values.output, tree)
    except (OSError, *USER_ERRORS) as error:
        sys.exit(f"error: {error}")
    print(f"Wrote the {flag_values.format} weights of {flag_values.input} to {flag_values.output}")


if __name__ == "__main__":
    cli.run(main, define_flags)
