"""Memory of one episode's meta-gradient for each `metatrain.inner_gradient`, from XLA.

  python scripts/inner_gradient_memory.py [--channels=512] [--feature_size=60] \
      [--mask_size=473] [--shot=1] [--steps=20,200]

Prints XLA's temporary memory of `jax.grad` of `episode.episode_loss` with respect to
the CWT, a learned initialisation and learned log learning rates, compiled for the
default device at the given shapes (the defaults are PASCAL-5i's at ResNet-50, 473 px);
nothing is run. Meta-training's step needs this per episode.
"""

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from cwt_jax.fewshot import episode, inner
from cwt_jax.models import cwt

_CHANNELS = flags.DEFINE_integer("channels", 512, "Feature channels C.")
_FEATURE_SIZE = flags.DEFINE_integer("feature_size", 60, "Side of the feature maps.")
_MASK_SIZE = flags.DEFINE_integer("mask_size", 473, "Side of the masks (the test size).")
_SHOT = flags.DEFINE_integer("shot", 1, "Support images K.")
_STEPS = flags.DEFINE_list("steps", ["20", "200"], "Inner-loop step counts.")


def temp_mebibytes(inner_gradient: str, steps: int) -> float:
    """XLA's temporary memory of one episode's meta-gradient, in MiB."""
    channels, side, size = _CHANNELS.value, _FEATURE_SIZE.value, _MASK_SIZE.value
    arrays = (
        jax.ShapeDtypeStruct((_SHOT.value, side, side, channels), jnp.float32),
        jax.ShapeDtypeStruct((_SHOT.value, size, size), jnp.int32),
        jax.ShapeDtypeStruct((side, side, channels), jnp.float32),
        jax.ShapeDtypeStruct((size, size), jnp.int32),
    )
    params = {
        "cwt": cwt.init(jax.random.key(0), channels, 4),
        "inner": {"init": jnp.zeros((2, channels)), "log_lr": jnp.zeros((2, channels))},
    }

    inner_loop = inner.InnerLoop(
        optimizer=optax.sgd(0.1),
        steps=steps,
        init="learned",
        learn_lr=True,
        gradient=inner_gradient,
    )

    def loss(params, support_features, support_masks, query_features, query_mask):
        return episode.episode_loss(
            params,
            support_features,
            support_masks,
            query_features,
            query_mask,
            params["inner"]["init"],
            inner_loop,
        )

    compiled = jax.jit(jax.grad(loss)).lower(params, *arrays).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def main(argv) -> None:
    """Prints one line per mode and step count."""
    del argv
    for inner_gradient in inner.INNER_GRADIENTS:
        for steps in map(int, _STEPS.value):
            mebibytes = temp_mebibytes(inner_gradient, steps)
            print(f"{inner_gradient:<12} {steps:>4} steps: {mebibytes:8.3f} MiB")


if __name__ == "__main__":
    app.run(main)
