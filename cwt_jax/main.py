"""Entry point: wires the config to stage 1, stage 2, evaluation and episode export.

  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py --workdir=DIR \
      [--config.mode=eval] [--config.key=value ...]

A user's mistake (a missing file, a checkpoint that does not fit, an unknown optimiser,
an unwritable work dir) ends the run before any work with one line on stderr.
"""

import os
import sys
import tempfile

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cwt_jax import (
    convert,
    data,
    evaluate,
    fewshot,
    initialization,
    input_pipeline,
    optimizers,
    sharding,
)
from cwt_jax.metatrain import metatrain
from cwt_jax.metric_writer import MetricWriter
from cwt_jax.pretrain import pretrain

MODES = ("pretrain", "metatrain", "eval", "all", "export_episodes")
USER_ERRORS = (
    data.DataError,
    convert.ConversionError,
    optimizers.ConfigError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def run(config, workdir: str) -> None:
    """Runs `config.mode` in `workdir`, checking the inputs before any work."""
    if config.mode not in MODES:
        raise optimizers.ConfigError(f"mode={config.mode!r} is not one of {', '.join(MODES)}.")
    _check_batches(config)
    if config.distributed.enabled:
        section = config.distributed
        jax.distributed.initialize(
            section.coordinator_address or None,
            section.num_processes or None,
            section.process_id if section.process_id >= 0 else None,
        )
    _check_writable(workdir)
    optimizers.inner_optimizer(config.inner)
    if config.eval.cache_memory not in evaluate.CACHE_MEMORIES:
        raise optimizers.ConfigError(
            f"eval.cache_memory={config.eval.cache_memory!r} is not one of "
            f"{', '.join(evaluate.CACHE_MEMORIES)}."
        )
    if config.inner.init not in fewshot.CLASSIFIER_INITS:
        raise optimizers.ConfigError(
            f"inner.init={config.inner.init!r} is not one of {', '.join(fewshot.CLASSIFIER_INITS)}."
        )
    model = initialization.pspnet(config.model)
    backbone = cwt_params = resnet = episode_list = None
    if config.init.resnet and config.mode in ("pretrain", "all"):
        resnet = initialization.load_resnet(config.init.resnet, model, "init.resnet")
    if config.eval.episodes and config.mode in ("eval", "all"):
        episode_list = data.read_episode_list(config.eval.episodes)
    if config.init.backbone:
        backbone = initialization.load_backbone(config.init.backbone, model, "init.backbone")
    if config.init.cwt:
        cwt_params = initialization.load_cwt(
            config.init.cwt, model.bottleneck_dim, config.cwt.heads, "init.cwt"
        )
    inputs = sharding.in_turn(lambda: input_pipeline.prepare(config.data, config.seed, workdir))
    if config.mode == "export_episodes":
        specs = data.sample_episode_list(
            inputs.val, inputs.test_classes, shot=config.data.shot,
            num_episodes=config.eval.num_episodes, seed=config.seed,
        )  # fmt: skip
        data.write_episode_list(os.path.join(workdir, "episodes.json"), specs)
        print(f"Wrote {len(specs)} episodes to {os.path.join(workdir, 'episodes.json')}")
        return
    writer = MetricWriter(workdir)
    try:
        if config.mode in ("pretrain", "all") and backbone is None:
            pretrain(config, inputs, workdir, writer, resnet)
        if config.mode == "pretrain":
            return
        if backbone is None:
            backbone = initialization.load_backbone(
                _stage_result(workdir, "pretrain", "init.backbone"), model, "init.backbone"
            )
        if config.mode in ("metatrain", "all") and cwt_params is None:
            metatrain(config, inputs, backbone, workdir, writer)
        if config.mode == "metatrain":
            return
        if cwt_params is None:
            cwt_params = initialization.load_cwt(
                _stage_result(workdir, "metatrain", "init.cwt"),
                model.bottleneck_dim,
                config.cwt.heads,
                "init.cwt",
            )
        evaluate.evaluate(config, inputs, backbone, cwt_params, workdir, writer, episode_list)
    finally:
        writer.close()


def _check_batches(config) -> None:
    """Episode counts of the stages to run must split into whole compiled steps."""
    pairs = []
    if config.mode in ("metatrain", "all"):
        pairs += [
            ("metatrain.episodes_per_epoch", "metatrain.episodes_per_step"),
            ("metatrain.val_episodes", "eval.episodes_per_step"),
        ]
    if config.mode in ("eval", "all"):
        pairs.append(("eval.num_episodes", "eval.episodes_per_step"))
    evaluates = config.mode in ("metatrain", "eval", "all")  # validation is an evaluation
    if evaluates and config.eval.cache_batch_size < 1:
        raise optimizers.ConfigError(
            f"eval.cache_batch_size={config.eval.cache_batch_size} must be at least 1."
        )
    for count_key, batch_key in pairs:
        count, batch = (config[k][v] for k, v in (count_key.split("."), batch_key.split(".")))
        if batch < 1 or count % batch:
            raise optimizers.ConfigError(
                f"{count_key}={count} is not a multiple of {batch_key}={batch}; change either."
            )


def _stage_result(workdir: str, stage: str, key: str) -> str:
    path = os.path.join(workdir, stage, "best")
    if not os.path.isdir(path) or not os.listdir(path):
        raise FileNotFoundError(
            f"No {stage} result in {path}; set {key} to a checkpoint or run mode={stage} first."
        )
    return path


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):  # a name of its own: processes share workdir
            pass
    except OSError as error:
        raise PermissionError(
            f"--workdir={workdir} cannot be written ({error.strerror}); choose another directory."
        ) from None


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line; a missing config file or key ends the run with one line.

    config_flags reports both as Python exceptions (during parsing, or when the config is
    first read), which absl would print as tracebacks.
    """
    config_files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    if config_files and not os.path.isfile(config_files[-1]):
        sys.exit(f"error: --config={config_files[-1]} does not exist; see configs/.")
    try:
        remaining = flags.FLAGS(argv)
        _CONFIG.value  # noqa: B018 (loads the config file now)
    except flags.Error as error:
        sys.exit(f"error: {error}")
    except (AttributeError, KeyError) as error:
        key = str(error).strip("\"'")
        named = [arg.split("=")[0] for arg in argv if arg.startswith("--config.") and key in arg]
        sys.exit(f"error: {' '.join(named) or key} names no config key; see configs/common.py.")
    except (TypeError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    return remaining


def main(argv) -> None:
    """Runs the configured mode."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    try:
        run(_CONFIG.value, _WORKDIR.value)
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
