"""A whole run: checks, weights, data, then the stages of `config.mode` in turn.

Starting weights, in order: the work dir's own stage results, then `init.backbone` /
`init.cwt`, then `init.resnet` (stage 1 only), then random initialisation (stage 1 only).
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable

import jax

from cwt_jax import compilation, config_checks, data, errors, models, sharding
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import evaluate
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.fewshot import inner
from cwt_jax.training.metatrain import metatrain
from cwt_jax.training.pretrain import pretrain
from cwt_jax.weights import loading, starting


def run(config, workdir: str, report: Callable[[str], None] | None = None) -> None:
    """Runs `config.mode` in `workdir`; a bad input stops it before any work.

    Args:
      config: the whole config (`configs/common.py`).
      workdir: where checkpoints, metrics and results are written.
      report: shows a line to the user (the command passes `print`): what the stages
        and the evaluation found, where they wrote it; None says nothing.
    """
    report = report or _silent
    if config.distributed.enabled:
        section = config.distributed
        jax.distributed.initialize(
            section.coordinator_address or None,
            section.num_processes or None,
            section.process_id if section.process_id >= 0 else None,
        )
    if config.deterministic:  # after jax.distributed, before any other use of JAX
        compilation.use_deterministic_mode()
    config_checks.validate(config)
    compilation.use_cache(config.compilation_cache_dir)
    stages = config_checks.STAGES[config.mode]
    model = models.from_config(config.model)
    inner_loop = inner.from_config(config)
    resnet = backbone = meta_params = episode_list = None
    with _removed_on_error(workdir):
        _check_writable(workdir)
        if config.init.resnet and "pretrain" in stages:
            resnet = loading.load_resnet(config.init.resnet, model, "init.resnet")
        if config.init.backbone:
            model, backbone = loading.load_backbone(config.init.backbone, model, "init.backbone")
        if config.init.cwt:
            meta_params = loading.load_meta_params(
                config.init.cwt, model.feature_channels, config, "init.cwt"
            )
            starting.warn_on_another_shot(config.init.cwt, config.data.shot, "init.cwt")
            if config.inner.objective in inner.CWT_OBJECTIVES:
                starting.warn_on_another_objective(
                    config.init.cwt, config.inner.objective, "init.cwt"
                )
        if config.eval.episodes and "eval" in stages:
            episode_list = data.read_episode_list(config.eval.episodes)
        starting.check_stage_results(config, stages, workdir)
        inputs = sharding.in_turn(
            lambda: input_pipeline.prepare(
                config.data,
                config.seed,
                workdir,
                report,
                training=bool({"pretrain", "metatrain"} & set(stages)),
            )
        )
        if episode_list is not None:
            data.check_episode_list(
                inputs.val, episode_list, inputs.test_classes, config.eval.episodes
            )
        elif "eval" in stages or config.mode == "export_episodes":
            data.check_shot(inputs.val, inputs.test_classes, config.data.shot)
    if config.mode == "export_episodes":
        _export_episodes(config, inputs, workdir, report)
        return
    writer = MetricWriter(workdir)
    try:
        if "pretrain" in stages and models.is_frozen_encoder(model):
            report(
                f"Stage 1 (pretrain) skipped: model.backbone={config.model.backbone} is a "
                "pre-trained encoder, used frozen (init.backbone)."
            )
        if "pretrain" in stages and backbone is None:
            pretrain(config, model, inputs, workdir, writer, resnet, report)
        if not {"metatrain", "eval"} & set(stages):
            return
        if backbone is None:
            backbone = starting.stage_result(workdir, "pretrain", "init.backbone")
            model, backbone = loading.load_backbone(backbone, model, "init.backbone")
        adapts = config.inner.objective in inner.CWT_OBJECTIVES
        if "metatrain" in stages and not adapts:
            report(
                "Stage 2 (metatrain) skipped: inner.objective=repri fits RePRI's prototype "
                "classifier, which no CWT adapts."
            )
        if "metatrain" in stages and meta_params is None and adapts:
            metatrain(config, model, inner_loop, inputs, backbone, workdir, writer, report)
        if "eval" not in stages:
            return
        if meta_params is None and not adapts:
            meta_params = {"cwt": {}, "inner": {}}  # RePRI and the objectives beside it
        if meta_params is None:
            path = starting.stage_result(workdir, "metatrain", "init.cwt")
            meta_params = loading.load_meta_params(path, model.feature_channels, config, "init.cwt")
            starting.warn_on_another_shot(path, config.data.shot, "init.cwt")
            starting.warn_on_another_objective(path, config.inner.objective, "init.cwt")
        evaluate.evaluate(
            config,
            model,
            inner_loop,
            inputs,
            backbone,
            meta_params,
            workdir,
            writer,
            episode_list,
            report,
        )
    finally:
        writer.close()


def _silent(line: str) -> None:
    del line


def _export_episodes(
    config, inputs: input_pipeline.Inputs, workdir: str, report: Callable[[str], None]
) -> None:
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
    report(f"Wrote {len(specs)} episodes to {path}")


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


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):  # a name of its own: processes share workdir
            pass
    except OSError as error:
        raise PermissionError(
            f"--workdir={workdir} cannot be written ({error.strerror}); choose another directory."
        ) from None
