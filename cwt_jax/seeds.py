"""Randomness of a run: one root key from `config.seed`, one stream folded in per purpose.

The training stages fold the step into their stream's key, and each episode's classifier
initialisation and dropout come from `fewshot.episode.episode_keys` of that. An evaluation run
has a seed of its own (`eval.seeds`, or `config.seed + r` for run r): its key is
`key(run seed, Stream.EVALUATION)` and its episodes are sampled with the run seed, so a
seed gives the same run wherever it stands among the seeds. Episode sampling and
augmentation are NumPy/grain streams seeded the same way (`data_seed`).
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
    EVALUATION = 4  # an evaluation run, under its own seed: classifier initialisation


def key(seed: int, stream: Stream) -> jax.Array:
    """The key of `stream` under the run's root key `jax.random.key(seed)`."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def data_seed(seed: int, stream: Stream) -> int:
    """An integer seed of `stream` for NumPy and grain, apart from every other stream's."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
