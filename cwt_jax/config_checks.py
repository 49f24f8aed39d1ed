"""Every check of a config, made before any work: a bad value stops the run with one line."""

import jax

from cwt_jax import models, optimizers
from cwt_jax.data import classes, cross_domain, transforms
from cwt_jax.errors import ConfigError
from cwt_jax.evaluation import feature_cache, results
from cwt_jax.fewshot import inner, repri
from cwt_jax.models import vit
from cwt_jax.training import metatrain

MODES = ("pretrain", "metatrain", "eval", "all", "export_episodes")
# The stages each mode runs, in order; a stage is skipped when its `init.*` key is given.
STAGES = {
    "pretrain": ("pretrain",),
    "metatrain": ("metatrain",),
    "eval": ("eval",),
    "all": ("pretrain", "metatrain", "eval"),
    "export_episodes": (),
}


def validate(config) -> None:
    """Raises `ConfigError` naming the key of the first value that cannot work.

    Runs after `jax.distributed.initialize` (the device checks need the devices of every
    process) and before any data, weights or files are touched.
    """
    if config.mode not in MODES:
        raise ConfigError(f"mode={config.mode!r} is not one of {', '.join(MODES)}.")
    stages = STAGES[config.mode]
    _data(config, stages)
    model = models.from_config(config.model)
    if models.is_frozen_encoder(model):
        _frozen_encoder(config, model, stages)
    inner.from_config(config)  # the inner optimisers and their arguments
    _objectives(config, stages)
    _one_of("inner.init", config.inner.init, inner.CLASSIFIER_INITS)
    if not isinstance(config.inner.learn_lr, bool):
        raise ConfigError(f"inner.learn_lr={config.inner.learn_lr!r} must be True or False.")
    _at_least_one("inner.steps", config.inner.steps)
    if "pretrain" in stages:
        optimizers.from_config(config.pretrain, "pretrain")
        _batch("pretrain.batch_size", config.pretrain.batch_size)
        _at_least_one("pretrain.log_every", config.pretrain.log_every)
        _at_least_one("pretrain.checkpoint_every", config.pretrain.checkpoint_every)
    if "metatrain" in stages:
        section = config.metatrain
        optimizers.meta_optimizer(section)
        _batch("metatrain.episodes_per_step", section.episodes_per_step)
        _one_of("metatrain.inner_gradient", section.inner_gradient, inner.INNER_GRADIENTS)
        learned = []
        if config.inner.init == "learned":
            learned.append("inner.init=learned")
        if config.inner.learn_lr:
            learned.append("inner.learn_lr=True")
        if learned and section.inner_gradient == "none":
            raise ConfigError(
                f"{' and '.join(learned)} need metatrain.inner_gradient=first_order or full: "
                "with none, no gradient reaches the inner loop."
            )
        if not learned and section.inner_gradient != "none":
            raise ConfigError(
                f"metatrain.inner_gradient={section.inner_gradient} has nothing to train: set "
                "inner.init=learned or inner.learn_lr=True, or use none."
            )
        scale = section.inner_params_lr_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(
                f"metatrain.inner_params_lr_scale={scale!r} must be a positive number."
            )
        if not learned and scale != 1:
            raise ConfigError(
                f"metatrain.inner_params_lr_scale={scale} scales nothing: set inner.init=learned "
                "or inner.learn_lr=True, or leave it at 1."
            )
        per_epoch, per_step = section.episodes_per_epoch, section.episodes_per_step
        if per_epoch < 1 or per_epoch % per_step:
            raise ConfigError(
                f"metatrain.episodes_per_epoch={per_epoch} is not a multiple of "
                f"metatrain.episodes_per_step={per_step}; change either."
            )
        _at_least_one("metatrain.val_episodes", section.val_episodes)
        _one_of("metatrain.val_source", section.val_source, metatrain.VAL_SOURCES)
        if not 0 < section.holdout_fraction < 1:
            raise ConfigError(
                f"metatrain.holdout_fraction={section.holdout_fraction} must lie in (0, 1)."
            )
        _at_least_one("metatrain.log_every", section.log_every)
        _at_least_one("metatrain.checkpoint_every", section.checkpoint_every)
    if {"metatrain", "eval"} & set(stages):  # meta-training's validation is an evaluation
        _batch("eval.episodes_per_step", config.eval.episodes_per_step)
        _at_least_one("eval.cache_batch_size", config.eval.cache_batch_size)
        _one_of("eval.cache_memory", config.eval.cache_memory, feature_cache.MEMORIES)
    if config.mode in ("eval", "all", "export_episodes"):
        _seeds(config.eval)
        _at_least_one("eval.num_episodes", config.eval.num_episodes)
        _one_of("eval.label_resolution", config.eval.label_resolution, results.LABEL_RESOLUTIONS)


def _objectives(config, stages) -> None:
    """`inner.objective`, `eval.objectives` and RePRI's settings where an objective reads them."""
    objective = config.inner.objective
    _one_of("inner.objective", objective, inner.OBJECTIVES)
    for name in config.eval.objectives:
        _one_of("eval.objectives", name, inner.OBJECTIVES)
    if len(set(config.eval.objectives)) < len(config.eval.objectives):
        raise ConfigError(f"eval.objectives={config.eval.objectives!r} repeats an objective.")
    if objective == "repri":
        if config.mode == "metatrain":
            raise ConfigError(
                "inner.objective=repri fits RePRI's prototype classifier, which the CWT does "
                "not adapt: there is no CWT to meta-train; use support or transductive."
            )
        learned = [
            key
            for key, on in (
                ("inner.init=learned", config.inner.init == "learned"),
                ("inner.learn_lr=True", config.inner.learn_lr),
            )
            if on
        ]
        if learned:
            raise ConfigError(
                f"inner.objective=repri starts from the support prototype at its own rate "
                f"(inner.repri.lr): {' and '.join(learned)} would go unused; set "
                "inner.init=torch and inner.learn_lr=False, or use support or transductive."
            )
    used = {objective, *config.eval.objectives} if {"metatrain", "eval"} & set(stages) else set()
    if used & {"repri", "transductive"}:
        _repri(config.inner.repri, config.inner.steps, used)


def _repri(section, inner_steps: int, used: set[str]) -> None:
    """`inner.repri`: RePRI's settings, and the query terms of the transductive objective."""
    _one_of("inner.repri.fb_param_type", section.fb_param_type, repri.FB_PARAM_TYPES)
    _one_of("inner.repri.query_pixels", section.query_pixels, repri.QUERY_PIXELS)
    weights = tuple(section.weights)
    if len(weights) != 3 or not all(
        weight == "auto"
        or (isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0)
        for weight in weights
    ):
        raise ConfigError(
            f"inner.repri.weights={weights!r} must be three weights (CE, KL, entropy), each "
            "a number >= 0 or auto (1/shot)."
        )
    if "repri" in used:
        _at_least_one("inner.repri.adapt_iter", section.adapt_iter)
        temperature = section.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ConfigError(f"inner.repri.temperature={temperature!r} must be a number.")
        if not isinstance(section.norm_feat, bool):
            raise ConfigError(f"inner.repri.norm_feat={section.norm_feat!r} must be True or False.")
    loops = {
        "repri": ("inner.repri.adapt_iter", section.adapt_iter - 1),
        "transductive": ("inner.steps", inner_steps),
    }
    for objective in sorted(used & set(loops)):
        key, updates = loops[objective]
        for iteration in section.fb_param_update:
            if (
                isinstance(iteration, bool)
                or not isinstance(iteration, int)
                or not (2 <= iteration <= updates)
            ):
                raise ConfigError(
                    f"inner.repri.fb_param_update={tuple(section.fb_param_update)!r}: the "
                    f"{objective} loop re-estimates π before its updates 2..{updates} "
                    f"({key}), not before {iteration!r}."
                )


def _data(config, stages) -> None:
    """The `data` section: dataset, fold, resize, class lists, and what the stages need."""
    section = config.data
    datasets = (*classes.CLASS_NAMES, *cross_domain.DATASETS)
    _one_of("data.dataset", section.dataset, datasets)
    if section.test_dataset:
        _one_of("data.test_dataset", section.test_dataset, datasets)
    _one_of("data.resize", section.resize, transforms.RESIZES)
    if section.dataset not in cross_domain.DATASETS and section.fold not in (0, 1, 2, 3, "all"):
        raise ConfigError(f"data.fold={section.fold!r} is not one of 0, 1, 2, 3, all.")
    novel_val = "metatrain" in stages and config.metatrain.val_source == "novel_val"
    evaluates = "eval" in stages or config.mode == "export_episodes" or novel_val
    if section.fold == "all" and not section.test_dataset and evaluates:
        raise ConfigError(
            "data.fold=all holds out no class to evaluate or validate on: set data.test_dataset "
            "(e.g. isic, with data.test_root) or a fold 0..3."
        )
    if section.resize == "squash" and config.eval.label_resolution != "padded":
        raise ConfigError(
            f"eval.label_resolution={config.eval.label_resolution} needs data.resize=padded: "
            "squashed images have no original-size inverse here; use label_resolution=padded."
        )
    binary = section.dataset in cross_domain.DATASETS
    if "pretrain" in stages and binary and not config.init.backbone:
        raise ConfigError(
            f"data.dataset={section.dataset} has binary masks, which stage 1 cannot train on; "
            "pass init.backbone (a PSPNet trained on PASCAL or COCO)."
        )
    for split in ("train", "val", "test"):
        if section.folder_classes[split] and section[f"{split}_list"]:
            raise ConfigError(
                f"data.folder_classes.{split} and data.{split}_list both name the {split} "
                "classes; give one."
            )
        if section.folder_classes[split] and section.dataset != "folder":
            raise ConfigError(
                f"data.folder_classes.{split} is for data.dataset=folder, not {section.dataset}."
            )
    if section.test_list and not {"fss1000", "folder"} & {section.dataset, section.test_dataset}:
        raise ConfigError(
            f"data.test_list is a class list of fss1000 or folder, not of {section.dataset}."
        )
    if (
        "metatrain" in stages
        and config.metatrain.val_source == "fss1000_val"
        and not section.val_root
        and section.dataset not in ("fss1000", "folder")
    ):
        raise ConfigError(
            "metatrain.val_source=fss1000_val reads FSS-1000's val classes: set data.val_root "
            "to the FSS-1000 folder."
        )


def _frozen_encoder(config, model, stages) -> None:
    """A DINOv2 backbone: images of whole patches, no stage 1, the official weights given."""
    name = config.model.backbone
    models.check_image_size(model, config.data.image_size, "data.image_size")
    if config.mode == "pretrain":
        raise ConfigError(
            f"mode=pretrain trains a PSPNet, but model.backbone={name} is used frozen; run "
            "mode=metatrain, eval or all."
        )
    if config.init.resnet:
        raise ConfigError(
            f"init.resnet={config.init.resnet} initialises stage 1, which "
            f"model.backbone={name} skips; leave init.resnet empty."
        )
    if {"metatrain", "eval"} & set(stages) and not config.init.backbone:
        raise ConfigError(
            f"model.backbone={name} needs init.backbone: the official checkpoint "
            f"{vit.hub_file_name(name)} ({vit.hub_url(name)}) or its conversion."
        )


def _seeds(section) -> None:
    """`eval.seeds`: distinct integers, or empty for `eval.num_runs` runs from `seed` on."""
    run_seeds = list(section.seeds)
    if not run_seeds:
        _at_least_one("eval.num_runs", section.num_runs)
    elif not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in run_seeds):
        raise ConfigError(f"eval.seeds={section.seeds!r} must hold integers only.")
    elif len(set(run_seeds)) < len(run_seeds):
        raise ConfigError(
            f"eval.seeds={section.seeds!r} repeats a seed; a repeated run adds no information."
        )


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}.")


def _at_least_one(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key}={value} must be at least 1.")


def _batch(key: str, batch_size: int) -> None:
    """A global batch size: at least 1; a multiple of the devices across processes.

    Each process of a multi-process run loads its devices' share of every batch.
    """
    _at_least_one(key, batch_size)
    if jax.process_count() > 1 and batch_size % jax.device_count():
        raise ConfigError(
            f"{key}={batch_size} must be a multiple of the {jax.device_count()} devices of a "
            "multi-process run."
        )
