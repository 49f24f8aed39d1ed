"""A whole run: checks, weights, data, then the stages of `config.mode` in turn.

Starting weights, in order: the work dir's own stage results, then `init.backbone` /
`init.cwt`, then `init.resnet` (stage 1 only), then random initialisation (stage 1 only).
"""

import contextlib
import json
import os
import shutil
import tempfile

import jax
from absl import logging

from cwt_jax import (
    compilation,
    config_checks,
    data,
    errors,
    evaluate,
    initialization,
    input_pipeline,
    sharding,
)
from cwt_jax.metatrain import metatrain
from cwt_jax.metric_writer import MetricWriter
from cwt_jax.pretrain import pretrain


def run(config, workdir: str) -> None:
    """Runs `config.mode` in `workdir`; a bad input stops it before any work.

    Args:
      config: the whole config (`configs/common.py`).
      workdir: where checkpoints, metrics and results are written.
    """
    if config.distributed.enabled:
        section = config.distributed
        jax.distributed.initialize(
            section.coordinator_address or None,
            section.num_processes or None,
            section.process_id if section.process_id >= 0 else None,
        )
    config_checks.validate(config)
    compilation.use_cache(config.compilation_cache_dir)
    stages = config_checks.STAGES[config.mode]
    model = initialization.pspnet(config.model)
    resnet = backbone = meta_params = episode_list = None
    with _removed_on_error(workdir):
        _check_writable(workdir)
        if config.init.resnet and "pretrain" in stages:
            resnet = initialization.load_resnet(config.init.resnet, model, "init.resnet")
        if config.init.backbone:
            backbone = initialization.load_backbone(config.init.backbone, model, "init.backbone")
        if config.init.cwt:
            meta_params = initialization.load_meta_params(
                config.init.cwt, model.bottleneck_dim, config, "init.cwt"
            )
            _warn_on_another_shot(config.init.cwt, config.data.shot, "init.cwt")
        if config.eval.episodes and "eval" in stages:
            episode_list = data.read_episode_list(config.eval.episodes)
        _check_stage_results(config, stages, workdir)
        inputs = sharding.in_turn(lambda: input_pipeline.prepare(config.data, config.seed, workdir))
        if episode_list is not None:
            data.check_episode_list(
                inputs.val, episode_list, inputs.test_classes, config.eval.episodes
            )
    if config.mode == "export_episodes":
        _export_episodes(config, inputs, workdir)
        return
    writer = MetricWriter(workdir)
    try:
        if "pretrain" in stages and backbone is None:
            pretrain(config, inputs, workdir, writer, resnet)
        if not {"metatrain", "eval"} & set(stages):
            return
        if backbone is None:
            backbone = _stage_result(workdir, "pretrain", "init.backbone")
            backbone = initialization.load_backbone(backbone, model, "init.backbone")
        if "metatrain" in stages and meta_params is None:
            metatrain(config, inputs, backbone, workdir, writer)
        if "eval" not in stages:
            return
        if meta_params is None:
            path = _stage_result(workdir, "metatrain", "init.cwt")
            meta_params = initialization.load_meta_params(
                path, model.bottleneck_dim, config, "init.cwt"
            )
            _warn_on_another_shot(path, config.data.shot, "init.cwt")
        evaluate.evaluate(config, inputs, backbone, meta_params, workdir, writer, episode_list)
    finally:
        writer.close()


def _export_episodes(config, inputs: input_pipeline.Inputs, workdir: str) -> None:
    """Writes the episodes of evaluation run 0 (the first seed's) to `<workdir>/episodes.json`.

    Evaluated with `eval.episodes`, they are scored as run 0 is: their one run has the
    same seed.
    """
    specs = data.sample_episode_list(
        inputs.val,
        inputs.test_classes,
        shot=config.data.shot,
        num_episodes=config.eval.num_episodes,
        seed=evaluate.evaluation_seeds(config, None)[0],
    )
    path = os.path.join(workdir, "episodes.json")
    data.write_episode_list(path, specs)
    print(f"Wrote {len(specs)} episodes to {path}")


@contextlib.contextmanager
def _removed_on_error(workdir: str):
    """Removes `workdir` when a user error stops the run in the block and the run made it.

    Around the checks of a run's inputs, so that a run that stops on one leaves nothing
    behind (a partly prepared dataset included, and the folders above `workdir` that the
    run made for it).
    """
    made = None  # the outermost folder the run will make
    folder = os.path.abspath(workdir)
    while not os.path.exists(folder):
        made, folder = folder, os.path.dirname(folder)
    try:
        yield
    except errors.USER_ERRORS:
        if made is not None and jax.process_index() == 0:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _check_stage_results(config, stages: tuple[str, ...], workdir: str) -> None:
    """The results of the stages `config.mode` does not run and no `init.*` key replaces.

    Checked before the data are prepared: a missing one stops the run at once.
    """
    if {"metatrain", "eval"} & set(stages) and "pretrain" not in stages:
        if not config.init.backbone:
            _stage_result(workdir, "pretrain", "init.backbone")
    if "eval" in stages and "metatrain" not in stages and not config.init.cwt:
        _stage_result(workdir, "metatrain", "init.cwt")


def _stage_result(workdir: str, stage: str, key: str) -> str:
    path = os.path.join(workdir, stage, "best")
    if not os.path.isdir(path) or not os.listdir(path):
        raise FileNotFoundError(
            f"No {stage} result in {path}; set {key} to a checkpoint or run mode={stage} first."
        )
    return path


def _warn_on_another_shot(path: str, shot: int, key: str) -> None:
    """Warns when the CWT at `path` was meta-trained with another `data.shot` than `shot`.

    A run's checkpoint folder (`<workdir>/metatrain/best`) has its stage's settings.json
    beside it; a converted .pth file or checkpoint without one is not checked.
    """
    settings_path = os.path.join(os.path.dirname(os.path.normpath(path)), "settings.json")
    if not os.path.isfile(settings_path):
        return
    with open(settings_path) as file:
        trained_shot = json.load(file).get("data.shot")
    if trained_shot is not None and trained_shot != shot:
        logging.warning(
            "%s=%s was meta-trained %s-shot (%s) and is evaluated %s-shot: the CWT may score "
            "below the support-only classifier; meta-train with data.shot=%s for this setting.",
            key,
            path,
            trained_shot,
            settings_path,
            shot,
            shot,
        )


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):  # a name of its own: processes share workdir
            pass
    except OSError as error:
        raise PermissionError(
            f"--workdir={workdir} cannot be written ({error.strerror}); choose another directory."
        ) from None
