"""Where a run's stages find their starting weights, checked before any work.

Each stage starts from, in order: the work dir's own result of the stage before it
(`<workdir>/pretrain/best`, `<workdir>/metatrain/best`), then the `init.backbone` /
`init.cwt` keys, then `init.resnet` (stage 1 only), then random initialisation (stage 1
only). `loading` reads and checks what these name.
"""

import json
import os

from cwt_jax import errors
from cwt_jax.fewshot import inner


def check_stage_results(config, stages: tuple[str, ...], workdir: str) -> None:
    """The results of the stages `config.mode` does not run and no `init.*` key replaces.

    Checked before the data are prepared: a missing one stops the run at once.
    """
    if {"metatrain", "eval"} & set(stages) and "pretrain" not in stages:
        if not config.init.backbone:
            stage_result(workdir, "pretrain", "init.backbone")
    adapts = config.inner.objective in inner.CWT_OBJECTIVES  # repri needs no CWT
    if "eval" in stages and "metatrain" not in stages and not config.init.cwt and adapts:
        stage_result(workdir, "metatrain", "init.cwt")


def stage_result(workdir: str, stage: str, key: str) -> str:
    """`<workdir>/<stage>/best`, the stage's result; raises `FileNotFoundError` naming `key`."""
    path = os.path.join(workdir, stage, "best")
    if not os.path.isdir(path) or not os.listdir(path):
        raise FileNotFoundError(
            f"No {stage} result in {path}; set {key} to a checkpoint or run mode={stage} first."
        )
    return path


def _trained_setting(path: str, name: str) -> tuple[object, str]:
    """(value of the config key `name` the CWT at `path` was meta-trained with, settings.json).

    A run's checkpoint folder (`<workdir>/metatrain/best`) has its stage's settings.json
    beside it; a converted .pth file or checkpoint without one, or an older run's file
    without the key, gives None.
    """
    settings_path = os.path.join(os.path.dirname(os.path.normpath(path)), "settings.json")
    if not os.path.isfile(settings_path):
        return None, settings_path
    with open(settings_path) as file:
        return json.load(file).get(name), settings_path


def warn_on_another_shot(path: str, shot: int, key: str) -> None:
    """Warns when the CWT at `path` was meta-trained with another `data.shot` than `shot`."""
    trained_shot, settings_path = _trained_setting(path, "data.shot")
    if trained_shot is not None and trained_shot != shot:
        errors.warn(
            f"{key}={path} was meta-trained {trained_shot}-shot ({settings_path}) and is "
            f"evaluated {shot}-shot: the CWT may score below the support-only classifier; "
            f"meta-train with data.shot={shot} for this setting."
        )


def warn_on_another_objective(path: str, objective: str, key: str) -> None:
    """Warns when the CWT at `path` was meta-trained on another `inner.objective`.

    The CWT learns to adapt the classifiers of its meta-training's inner loop.
    """
    trained, settings_path = _trained_setting(path, "inner.objective")
    if trained is not None and trained != objective:
        errors.warn(
            f"{key}={path} was meta-trained on the {trained} inner objective "
            f"({settings_path}) and adapts {objective} classifiers here; set "
            f"inner.objective={trained} to evaluate it as it was trained."
        )
