"""Segmenting one's own images: a few annotated supports, then any number of queries.

The library of `python -m cwt_jax.predict` (its command line is `predict/__main__.py`,
its files `predict/image_files.py`). The steps are evaluation's (`evaluate.make_scores`):
the same preprocessing (`transforms.eval_transform`), the support classifier fitted by
the inner loop (`episode.fit_support`) from `inner.init_classifier`, the CWT applied
to each query and the logit difference thresholded at 0. With the support objective the
classifier is fitted once for all queries; the transductive objective and RePRI's
(`Settings.inner_objective`) read each query's features, so they fit one per query. The
CWT and those fits run vmapped over batches of queries. RePRI's query terms count the
query's pixels outside its padding: a query has no label, whose 255 band the official
code also leaves out. Each prediction is brought back to its query's own size: the
logit differences are cropped to the part of the padded square that holds the image and
resized to the image's size before the threshold.

The architecture is read from the checkpoints (`load_checkpoints`). Defaults come from
the config: `Settings.from_config` of `configs/common.py`'s `base()` gives the command's.
"""

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cwt_jax import data, errors, models, seeds
from cwt_jax.data import transforms
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.fewshot import classifier, episode, inner, repri
from cwt_jax.models import interpolate
from cwt_jax.weights import loading


@dataclasses.dataclass(frozen=True)
class Settings:
    """How queries are segmented (`from_config` gives a config's settings).

    Attributes:
      image_size: side of the padded square the images are resized into.
      class_id: the class of the support masks to segment, in masks of class ids; None
        takes every value but 0 and 255 as foreground.
      inner_steps: updates of the support classifier.
      inner_lr: its learning rate.
      inner_optimizer: its optax optimiser, by name.
      inner_init: its initialisation, "torch", "zeros" or "learned", the meta-learned one
        of the CWT checkpoint (`inner.init_classifier`, `load_checkpoints`).
      inner_objective: what the inner loop fits (`inner.OBJECTIVES`); "repri" needs no CWT.
      seed: seed of the initialisation.
      batch_size: images per backbone pass and queries per CWT pass.
      repri: RePRI's settings, the `inner.repri` config section as a dict.
    """

    image_size: int
    class_id: int | None
    inner_steps: int
    inner_lr: float
    inner_optimizer: str
    inner_init: str
    inner_objective: str
    seed: int
    batch_size: int
    repri: dict

    @classmethod
    def from_config(cls, config, **changes) -> "Settings":
        """The settings of a config, with `changes` to its fields.

        `configs/common.py`'s `base()` gives the original's at test time: 473 px, 200 SGD
        steps at 0.1 from PyTorch's initialisation on the support objective, seed 0,
        batches of 8 images (`eval.cache_batch_size`), every mask value but 0 and 255 as
        foreground, and RePRI's official settings.

        Args:
          config: a whole config (`data.image_size`, `inner`, `seed`, `eval`).
          **changes: fields to set otherwise, e.g. `class_id=3`.

        Returns:
          The settings.
        """
        settings = cls(
            image_size=config.data.image_size,
            class_id=None,
            inner_steps=config.inner.steps,
            inner_lr=config.inner.lr,
            inner_optimizer=config.inner.optimizer,
            inner_init=config.inner.init,
            inner_objective=config.inner.objective,
            seed=config.seed,
            batch_size=config.eval.cache_batch_size,
            repri=config.inner.repri.to_dict(),
        )
        return dataclasses.replace(settings, **changes)


def segment(
    backbone_variables,
    cwt_params,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    query_images: Sequence[np.ndarray],
    *,
    layers: int | Sequence[int],
    width: int = 64,
    bottleneck_dim: int = 512,
    inner_params: dict | None = None,
    settings: Settings,
) -> list[np.ndarray]:
    """Foreground masks of the queries, by the CWT adapting the supports' classifier.

    Args:
      backbone_variables: PSPNet variables (`load_checkpoints`).
      cwt_params: transformer parameters (`load_checkpoints`).
      support_images: K uint8 (H, W, 3) RGB images, of any sizes.
      support_masks: their (H, W) masks: any value but 0 is foreground (or only
        `class_id`), 255 is ignored.
      query_images: uint8 (H, W, 3) RGB images, of any sizes.
      layers: ResNet depth (50 or 101) or four block counts.
      width: ResNet base width.
      bottleneck_dim: feature channels.
      inner_params: the inner loop's meta-learned parts (`load_checkpoints`), if any.
      settings: how to segment (`Settings.from_config`).

    Returns:
      One uint8 (H, W) mask per query, at its size: 1 foreground, 0 background.
    """
    model = models.PSPNet(layers=layers, width=width, bottleneck_dim=bottleneck_dim)
    return [
        next(iter(prediction.values()))  # the CWT's, or RePRI's where it has none
        for prediction in predictions(
            model,
            backbone_variables,
            cwt_params,
            support_images,
            support_masks,
            query_images,
            settings,
            inner_params=inner_params,
        )
    ]


def predictions(
    model: models.PSPNet | models.DinoV2,
    backbone_variables,
    cwt_params,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    query_images: Sequence[np.ndarray],
    settings: Settings,
    *,
    inner_params: dict | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Each query's masks with and without the CWT, query by query.

    Args:
      model: the backbone the variables belong to.
      backbone_variables: its variables.
      cwt_params: transformer parameters.
      support_images: K uint8 (H, W, 3) RGB images.
      support_masks: their (H, W) masks (see `foreground_mask`).
      query_images: uint8 (H, W, 3) RGB images.
      settings: how to segment (`Settings.from_config`).
      inner_params: the inner loop's meta-learned parts (`load_checkpoints`): a learned
        initialisation (used with `inner_init="learned"`) and learning-rate factors.

    Yields:
      {method: (H, W) uint8 {0, 1} mask} of each query, in order, for the methods of
      `episode.methods(settings.inner_objective)`: {"cwt", "support_only"} with the
      support objective, {"cwt", "transductive"} and {"repri"} with the others.
    """
    inner_params = inner_params or {}
    models.check_image_size(model, settings.image_size, "image_size")
    if settings.inner_init == "learned" and "init" not in inner_params:
        raise errors.ConfigError(
            "inner_init='learned' needs the learned initialisation: pass inner_params "
            "(`load_checkpoints`) or another inner_init."
        )
    for index, (image, mask) in enumerate(zip(support_images, support_masks, strict=True)):
        check_support(image, mask, settings, f"support {index}")
    for index, image in enumerate(query_images):
        check_image(image, settings.image_size, f"query {index}")
    support_features, masks = support_inputs(
        model, backbone_variables, support_images, support_masks, settings
    )
    loop = inner_loop(settings, inner_params)
    init = inner.init_classifier(
        classifier_init_key(settings.seed), inner_params, model.feature_channels, loop.init
    )
    if loop.objective == "support":
        weights = episode.fit_support(inner_params, support_features, masks, init, loop)
    size = (settings.image_size, settings.image_size)
    for start in range(0, len(query_images), settings.batch_size):
        batch = query_images[start : start + settings.batch_size]
        inputs, unlabelled = zip(
            *(preprocess(image, _unlabelled(image), settings.image_size) for image in batch),
            strict=True,
        )
        # A full batch, the last padded, so that every batch runs the same programs.
        features = models.apply_backbone(
            model, backbone_variables, padded_batch(np.stack(inputs), settings.batch_size)
        )
        if loop.objective == "support":
            differences = query_logit_differences(cwt_params, weights, features, size)
        else:
            fitted = {
                "cwt": cwt_params,
                "inner": inner_params,
                "support_features": support_features,
            }
            differences = per_query_logit_differences(
                fitted,
                masks,
                init,
                features,
                padded_batch(np.stack(unlabelled), settings.batch_size),
                loop=loop,
            )
        differences = jax.device_get(differences)
        for row, image in enumerate(batch):
            yield {
                method: (
                    at_original_size(values[row], image.shape[:2], settings.image_size) > 0
                ).astype(np.uint8)
                for method, values in differences.items()
            }


def foreground_mask(mask: np.ndarray, class_id: int | None) -> np.ndarray:
    """A support's {0, 1, 255} mask.

    Args:
      mask: (H, W) mask.
      class_id: the class to take as foreground, or None for every value but 0 and 255.

    Returns:
      uint8 (H, W): 1 foreground, 255 where `mask` is 255, 0 elsewhere.
    """
    if class_id is not None:
        return data.binary_mask(mask, class_id)
    return np.where(mask == IGNORE_LABEL, IGNORE_LABEL, mask != 0).astype(np.uint8)


def check_image(image: np.ndarray, image_size: int, name: str) -> None:
    """Raises `DataError` unless `image` is RGB and keeps both sides at `image_size`.

    Args:
      image: the image.
      image_size: the side it is resized into.
      name: the image's file or place, for the message.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise errors.DataError(f"{name} has shape {image.shape}; give an (H, W, 3) RGB image.")
    if min(transforms.resized_shape(*image.shape[:2], image_size)) == 0:
        raise errors.DataError(
            f"{name} ({image.shape[0]}x{image.shape[1]}) has a side under 8 px once its longer "
            f"side is resized to {image_size}; crop it to a less elongated shape."
        )


def check_support(image: np.ndarray, mask: np.ndarray, settings: Settings, name: str) -> None:
    """Raises `DataError` unless the mask fits its image and marks some foreground.

    Args:
      image: (H, W, 3) support image.
      mask: its mask.
      settings: the image size and `class_id`.
      name: the support's files or place, for the message.
    """
    check_image(image, settings.image_size, name)
    if mask.shape != image.shape[:2]:
        raise errors.DataError(
            f"{name}: the mask is {'x'.join(map(str, mask.shape))} but the image is "
            f"{image.shape[0]}x{image.shape[1]}; give each image its own mask."
        )
    if not np.any(foreground_mask(mask, settings.class_id) == 1):
        wanted = (
            "no pixel of value 1..254 (255 is ignored)"
            if settings.class_id is None
            else f"no pixel of class {settings.class_id}"
        )
        raise errors.DataError(
            f"{name}: the mask has {wanted}; mark the object in the mask or pick its class "
            "with --class_id."
        )


def preprocess(
    image: np.ndarray, mask: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation's transform of an image and its {0, 1, 255} mask.

    Args:
      image: uint8 (H, W, 3) RGB.
      mask: uint8 (H, W).
      image_size: side S of the padded square.

    Returns:
      Normalised float32 (S, S, 3) image and int32 (S, S) mask, padded with 255.
    """
    return transforms.eval_transform(image.astype(np.float32), mask, image_size)


def _unlabelled(image: np.ndarray) -> np.ndarray:
    """The mask a query goes through `preprocess` with; only its image is used."""
    return np.zeros(image.shape[:2], np.uint8)


def padded_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """`images` with copies of the last appended up to a multiple of `batch_size`."""
    return np.concatenate([images, np.repeat(images[-1:], -len(images) % batch_size, axis=0)])


def classifier_init_key(seed: int) -> jax.Array:
    """The classifier-initialisation key of evaluation's first episode under `seed`.

    Evaluation run 0 keys its episodes by `episode.episode_keys` under this run key, so
    `--seed=S` starts from the classifier of episode 0 of `mode=eval` with `seed=S`.

    Args:
      seed: the seed.

    Returns:
      The key of `inner.init_classifier`.
    """
    init_key, _ = episode.episode_keys(seeds.key(seed, seeds.Stream.EVALUATION), 0)
    return init_key


def inner_loop(settings: Settings, inner_params: dict) -> inner.InnerLoop:
    """The inner loop of the settings (`inner.from_config`), built once per setting.

    The inner optimiser takes no further arguments nor weight decay; the learned
    learning-rate factor of the CWT checkpoint is used where it holds one.

    Raises:
      ConfigError: naming an optimiser optax does not have.
    """
    section = {
        "optimizer": settings.inner_optimizer,
        "optimizer_args": {},
        "lr": settings.inner_lr,
        "weight_decay": 0.0,
        "steps": settings.inner_steps,
        "init": settings.inner_init,
        "learn_lr": "log_lr" in inner_params,
        "objective": settings.inner_objective,
        "repri": settings.repri,
    }
    config = {"inner": section, "metatrain": {"inner_gradient": "none"}}
    return inner.from_config(ml_collections.ConfigDict(config))


def support_inputs(
    model: models.PSPNet | models.DinoV2,
    backbone_variables,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    settings: Settings,
) -> tuple[jnp.ndarray, np.ndarray]:
    """The supports' features and {0, 1, 255} masks, as evaluation preprocesses them.

    Args:
      model: the backbone.
      backbone_variables: its variables.
      support_images: K uint8 (H, W, 3) RGB images.
      support_masks: their masks (see `foreground_mask`).
      settings: the image size and `class_id`.

    Returns:
      (K, h, w, C) features and (K, S, S) masks.
    """
    images, masks = zip(
        *(
            preprocess(image, foreground_mask(mask, settings.class_id), settings.image_size)
            for image, mask in zip(support_images, support_masks, strict=True)
        ),
        strict=True,
    )
    # The supports in passes of a query batch's size: the queries' backbone program.
    batches = padded_batch(np.stack(images), settings.batch_size)
    features = jnp.concatenate(
        [
            models.apply_backbone(
                model, backbone_variables, batches[start : start + settings.batch_size]
            )
            for start in range(0, len(batches), settings.batch_size)
        ]
    )[: len(images)]
    return features, np.stack(masks)


@functools.partial(jax.jit, static_argnames="loop")
def per_query_logit_differences(
    fitted: dict,
    support_masks: np.ndarray,
    init_weights: jnp.ndarray,
    query_features: jnp.ndarray,
    query_masks: np.ndarray,
    *,
    loop: inner.InnerLoop,
) -> dict[str, jnp.ndarray]:
    """Logit differences of a batch of queries whose inner loop reads each query.

    Per query `episode.episode_logit_differences` (evaluation's scoring): the
    transductive objective's classifier and its CWT adaptation, or RePRI's, each fitted
    on the supports and that query; resized to the padded square as evaluation does
    before its threshold.

    Args:
      fitted: {"cwt": transformer parameters, "inner": the inner loop's meta-learned
        parts, "support_features": (K, h, w, C)}.
      support_masks: (K, S, S) masks in {0, 1, 255}.
      init_weights: (2, C) initial classifier weights.
      query_features: (B, h, w, C) raw query features.
      query_masks: (B, S, S) masks of the queries' padding (255) and image (0).
      loop: the inner loop (static).

    Returns:
      {method: (B, S, S) foreground-minus-background logits}.
    """
    params = {"cwt": fitted["cwt"], "inner": fitted["inner"]}
    size = query_masks.shape[-2:]

    def differences(features, mask):
        valid = repri.query_valid(mask, features.shape[:2], loop.repri_settings.query_pixels)
        per_method = episode.episode_logit_differences(
            params,
            fitted["support_features"],
            support_masks,
            features,
            init_weights,
            loop,
            query_valid=valid,
        )
        return {
            method: interpolate.resize_bilinear(difference[..., None], size)[..., 0]
            for method, difference in per_method.items()
        }

    return jax.vmap(differences)(query_features, query_masks)


@functools.partial(jax.jit, static_argnames="size")
def query_logit_differences(
    cwt_params, weights: jnp.ndarray, query_features: jnp.ndarray, size: tuple[int, int]
) -> dict[str, jnp.ndarray]:
    """Logit differences of a batch of queries, with and without the CWT.

    Per query `episode.adapt_to_query`: the CWT adapts `weights` to the query's
    normalised features; both weights' differences are resized to `size` as
    evaluation does before its threshold (`classifier.foreground`).

    Args:
      cwt_params: transformer parameters.
      weights: (2, C) support classifier.
      query_features: (B, h, w, C) raw query features.
      size: (S, S) of the padded images (static).

    Returns:
      {"cwt": (B, S, S), "support_only": (B, S, S)} foreground-minus-background logits.
    """

    def differences(features):
        adapted, normalized = episode.adapt_to_query(cwt_params, weights, features)
        return {
            method: classifier.logit_difference(method_weights, normalized, size)
            for method, method_weights in (("cwt", adapted), ("support_only", weights))
        }

    return jax.vmap(differences)(query_features)


def at_original_size(difference: np.ndarray, shape: tuple[int, int], image_size: int) -> np.ndarray:
    """A padded square's logit differences brought back to the image's own (H, W).

    The image filled the top-left `transforms.resized_shape` of the square; that part is
    cropped and resized bilinearly to (H, W) with OpenCV's `INTER_LINEAR`, the resize
    that made it: half-pixel centres, which is PyTorch's `align_corners=False`. The
    crop's corners are not the image's corners (the resize floors both sides to a
    multiple of 8), so `align_corners=True` would stretch it.

    Args:
      difference: (S, S) logit differences.
      shape: the image's (H, W).
      image_size: S.

    Returns:
      float32 (H, W) logit differences; foreground where positive.
    """
    height, width = transforms.resized_shape(*shape, image_size)
    cropped = np.ascontiguousarray(difference[:height, :width], np.float32)
    return cv2.resize(cropped, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


class Checkpoints(NamedTuple):
    """What `load_checkpoints` reads.

    Attributes:
      model: the backbone of the backbone checkpoint (PSPNet or DINOv2).
      backbone_variables: its variables.
      cwt_params: transformer parameters.
      inner_params: the inner loop's meta-learned parts kept beside the CWT
        (`metatrain.inner_gradient`): `{"init"?, "log_lr"?}` (2, C) arrays, none in a .pth
        file.
    """

    model: models.PSPNet | models.DinoV2
    backbone_variables: dict
    cwt_params: dict
    inner_params: dict


def load_checkpoints(backbone: str, cwt_checkpoint: str) -> Checkpoints:
    """A backbone and a CWT checkpoint, each read once, their architecture read from them.

    Args:
      backbone: PSPNet or official DINOv2 .pth file, converted checkpoint or a run's
        `pretrain/best`.
      cwt_checkpoint: transformer .pth file, converted checkpoint or a run's
        `metatrain/best`.

    Returns:
      The backbone, its variables, the transformer parameters and the inner loop's
      meta-learned parts.

    Raises:
      FileNotFoundError, ConversionError: a missing checkpoint, a path that holds none,
        one that holds no backbone or no CWT, or a CWT of other channels than the
        backbone's features.
    """
    model, variables = loading.read_backbone(backbone, "--backbone")
    cwt_params, inner_params = loading.read_cwt(
        cwt_checkpoint, model.feature_channels, "--cwt", f"--backbone={backbone}"
    )
    return Checkpoints(model, variables, cwt_params, inner_params)
