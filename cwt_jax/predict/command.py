"""The command line of `python -m cwt_jax.predict` (`__main__.py` runs it).

  python -m cwt_jax.predict --backbone=B --cwt=T --support=IMAGE:MASK [--support=...] \
      --query=IMAGE_OR_FOLDER [--query=...] --output=DIR
  python -m cwt_jax.predict --backbone=B --inner_objective=repri --support=... \
      --query=... --output=DIR   # RePRI's inference: no CWT

The flags' defaults are `configs/common.py`'s (`predict.Settings.from_config`). The
architecture is read from the checkpoints. A user's mistake (an unreadable image, a mask
that does not fit its image or has no foreground, a checkpoint of another architecture,
an empty query folder) ends the command before any work with one line on stderr.
"""

import dataclasses
import os
import sys
from collections.abc import Sequence

import tqdm
from absl import app, flags, logging

from cwt_jax import cli, compilation, errors, predict
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.evaluation import results
from cwt_jax.fewshot import inner
from cwt_jax.predict import image_files
from cwt_jax.weights import loading


def _check_inner_init(inner_params: dict, inner_init: str, cwt_checkpoint: str) -> None:
    """Raises `ConversionError` where `--inner_init` and the CWT's learned parts disagree.

    Args:
      inner_params: the inner loop's meta-learned parts of `--cwt`.
      inner_init: `--inner_init`: "learned" needs a learned initialisation, which no other
        value may leave unused (learning-rate factors always apply).
      cwt_checkpoint: `--cwt`.
    """
    if "init" in inner_params and inner_init != "learned":
        raise errors.ConversionError(
            f"--cwt={cwt_checkpoint} holds a meta-learned classifier initialisation, which "
            f"--inner_init={inner_init} leaves unused; pass --inner_init=learned."
        )
    if "init" not in inner_params and inner_init == "learned":
        raise errors.ConversionError(
            f"--cwt={cwt_checkpoint} holds no meta-learned classifier initialisation for "
            "--inner_init=learned; pass --inner_init=torch."
        )


def _check_objective(settings: predict.Settings, cwt_checkpoint: str | None) -> None:
    """Raises `ConfigError` where `--cwt` and `--inner_init` do not fit `--inner_objective`.

    RePRI fits its own prototype classifier from the supports: it reads no CWT and no
    initialisation; the other objectives' classifiers are adapted by the CWT of `--cwt`.
    """
    objective = settings.inner_objective
    if objective != "repri" and cwt_checkpoint is None:
        raise errors.ConfigError(
            f"--inner_objective={objective} fits the classifier the CWT adapts: give the CWT "
            "with --cwt, or use --inner_objective=repri."
        )
    if objective == "repri" and cwt_checkpoint is not None:
        raise errors.ConfigError(
            f"--inner_objective=repri fits RePRI's prototype classifier, which no CWT adapts: "
            f"--cwt={cwt_checkpoint} would go unused; leave --cwt out."
        )
    if objective == "repri" and settings.inner_init != "torch":
        raise errors.ConfigError(
            f"--inner_objective=repri starts from the support prototype: "
            f"--inner_init={settings.inner_init} would go unused; leave --inner_init out."
        )


def run(
    *,
    backbone: str,
    cwt_checkpoint: str | None,
    supports: Sequence[str],
    queries: Sequence[str],
    output: str,
    settings: predict.Settings,
) -> None:
    """The command: checks every input, then segments the queries and writes the files.

    Args:
      backbone: `--backbone`.
      cwt_checkpoint: `--cwt`; None with `--inner_objective=repri`.
      supports: the `--support` values.
      queries: the `--query` values.
      output: `--output`, created if needed.
      settings: the other flags.
    """
    predict.inner_loop(settings, {})  # an unknown optimiser stops it before any work
    _check_objective(settings, cwt_checkpoint)
    support_images, support_masks = image_files.read_supports(supports, settings)
    paths = image_files.query_paths(queries)
    query_images = [image_files.read_image(path, "--query") for path in paths]
    for path, image in zip(paths, query_images, strict=True):
        predict.check_image(image, settings.image_size, f"--query={path}")
    if cwt_checkpoint is None:  # RePRI
        model, variables = loading.read_backbone(backbone, "--backbone")
        loaded = predict.Checkpoints(model, variables, {}, {})
    else:
        loaded = predict.load_checkpoints(backbone, cwt_checkpoint)
        _check_inner_init(loaded.inner_params, settings.inner_init, cwt_checkpoint)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as error:
        raise PermissionError(
            f"--output={output} cannot be created ({error.strerror}); choose another folder."
        ) from None
    predicted = predict.predictions(
        loaded.model,
        loaded.backbone_variables,
        loaded.cwt_params,
        support_images,
        support_masks,
        query_images,
        settings,
        inner_params=loaded.inner_params,
    )
    entries = [
        image_files.write_query_outputs(output, path, image, masks)
        for path, image, masks in zip(
            paths, query_images, tqdm.tqdm(predicted, desc="predict", total=len(paths)), strict=True
        )
    ]
    summary = {
        "backbone": backbone,
        "cwt": cwt_checkpoint,
        "supports": list(supports),
        "settings": dataclasses.asdict(settings),
        "queries": entries,
    }
    results.write(os.path.join(output, "predictions.json"), summary)
    print(f"Wrote the masks and overlays of {len(paths)} queries and predictions.json to {output}")


def main(argv: Sequence[str], flag_values: flags.FlagValues) -> None:
    """Runs the command on the parsed flags; a user's mistake exits with one line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
    settings = predict.Settings.from_config(  # RePRI's settings are the config's
        cli.base_config(),
        **{
            field.name: flag_values[field.name].value
            for field in dataclasses.fields(predict.Settings)
            if field.name in flag_values
        },
    )
    try:
        if flag_values.deterministic:
            compilation.use_deterministic_mode()
        compilation.use_cache(flag_values.compilation_cache_dir)
        run(
            backbone=flag_values.backbone,
            cwt_checkpoint=flag_values.cwt,
            supports=flag_values.support,
            queries=flag_values.query,
            output=flag_values.output,
            settings=settings,
        )
    except errors.USER_ERRORS as error:
        sys.exit(f"error: {error}")


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags, their defaults `configs/common.py`'s (`cli.base_config`).

    Defined only when the command runs (`__main__.py`), or by a test on its own registry.
    """
    defaults = predict.Settings.from_config(cli.base_config())
    flags.DEFINE_string(
        "backbone",
        None,
        "PSPNet or official DINOv2 .pth file, or orbax checkpoint.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "cwt",
        None,
        "CWT .pth file or orbax checkpoint; none with --inner_objective=repri.",
        flag_values=flag_values,
    )
    flags.DEFINE_multi_string(
        "support",
        None,
        "IMAGE:MASK of a support image and its mask; repeat for K shots.",
        flag_values=flag_values,
    )
    flags.DEFINE_multi_string(
        "query", None, "Query image or folder of images; repeat.", flag_values=flag_values
    )
    flags.DEFINE_string(
        "output",
        None,
        "Folder for the masks, overlays and predictions.json.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "class_id",
        defaults.class_id,
        "Class of the support masks to segment; default: every value but 0 and 255.",
        lower_bound=1,
        upper_bound=IGNORE_LABEL - 1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "image_size",
        defaults.image_size,
        "Side the images are resized and padded to.",
        lower_bound=8,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "inner_steps",
        defaults.inner_steps,
        "Updates of the support classifier.",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_float("inner_lr", defaults.inner_lr, "Its learning rate.", flag_values=flag_values)
    flags.DEFINE_string(
        "inner_optimizer", defaults.inner_optimizer, "Its optax optimiser.", flag_values=flag_values
    )
    flags.DEFINE_enum(
        "inner_init",
        defaults.inner_init,
        list(inner.CLASSIFIER_INITS),
        "Its initialisation; learned: the one meta-learned beside the CWT of --cwt.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "inner_objective",
        defaults.inner_objective,
        list(inner.OBJECTIVES),
        "What the inner loop fits: support (CWT's), transductive (the same classifier on "
        "the supports and each query's features) or repri (RePRI's inference, no CWT).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", defaults.seed, "Seed of its initialisation.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "batch_size",
        defaults.batch_size,
        "Images per backbone pass and queries per CWT pass.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "compilation_cache_dir",
        compilation.DEFAULT_CACHE_DIR,
        "XLA's persistent compilation cache, as main's config.compilation_cache_dir; a "
        "second run of the same sizes reads its programs from it. Empty disables it.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "deterministic",
        False,
        "Results that do not depend on the CPU, as main's config.deterministic (slower).",
        flag_values=flag_values,
    )
    flags.mark_flags_as_required(
        ["backbone", "support", "query", "output"], flag_values=flag_values
    )
