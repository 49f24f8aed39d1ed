"""Randomness of a run: one root key from `config.seed`, one stream folded in per purpose.

The training stages fold the step into their stream's key, evaluation the run, and each
episode's classifier initialisation and dropout come from `fewshot.episode_keys` of that.
Episode sampling and augmentation are NumPy/grain streams seeded the same way
(`data_seed`); evaluation run r samples its episodes with seed `config.seed + r`.
"""

import enum

import jax
import numpy as np


class Stream(enum.IntEnum):
    """The purposes random numbers are drawn for; each has its own stream."""

    INIT = 0  # model initialisation: the PSPNet and base classifier, the CWT
    PRETRAIN = 1  # stage-1 steps: dropout
    METATRAIN = 2  # stage-2 steps: classifier initialisation and dropout per episode
    VALIDATION = 3  # meta-training validation: its episodes and classifier initialisation
    EVALUATION = 4  # evaluation runs: classifier initialisation


def key(seed: int, stream: Stream) -> jax.Array:
    """The key of `stream` under the run's root key `jax.random.key(seed)`."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def data_seed(seed: int, stream: Stream) -> int:
    """An integer seed of `stream` for NumPy and grain, apart from every other stream's."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
