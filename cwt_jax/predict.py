"""Segmenting one's own images: a few annotated supports, then any number of queries.

  python -m cwt_jax.predict --backbone=B --cwt=T --support=IMAGE:MASK [--support=...] \
      --query=IMAGE_OR_FOLDER [--query=...] --output=DIR

The steps are evaluation's (`evaluate.make_scores`): the same preprocessing
(`transforms.eval_transform`), the support classifier fitted by `classifier.fit` from
`fewshot.init_classifier`, the CWT applied to each query and the logit difference
thresholded at 0. The classifier is fitted once for all queries; the CWT runs per query,
vmapped over batches of queries. Each prediction is brought back to its query's own size:
the logit differences are cropped to the part of the padded square that holds the image
and resized to the image's size before the threshold.

The architecture is read from the checkpoints. A user's mistake (an unreadable image, a
mask that does not fit its image or has no foreground, a checkpoint of another
architecture, an empty query folder) ends the command before any work with one line on
stderr.
"""

import dataclasses
import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app, flags, logging

from cwt_jax import (
    classifier,
    compilation,
    convert,
    data,
    errors,
    fewshot,
    files,
    initialization,
    models,
    optimizers,
    results,
    seeds,
    visualize,
)
from cwt_jax.data import codec, transforms
from cwt_jax.evaluate import METHODS
from cwt_jax.labels import IGNORE_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The first convolution of each residual block in a PSPNet .pth file: "layer<stage>.<block>".
_PTH_BLOCK = re.compile(r"layer([1-4])\.\d+\.conv1\.weight")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How queries are segmented; the defaults are the original's at test time.

    Attributes:
      image_size: side of the padded square the images are resized into.
      class_id: the class of the support masks to segment, in masks of class ids; None
        takes every value but 0 and 255 as foreground.
      inner_steps: updates of the support classifier.
      inner_lr: its learning rate.
      inner_optimizer: its optax optimiser, by name.
      inner_init: its initialisation, "torch", "zeros" or "learned", the meta-learned one
        of the CWT checkpoint (`fewshot.init_classifier`, `load_checkpoints`).
      seed: seed of the initialisation.
      batch_size: images per backbone pass and queries per CWT pass.
    """

    image_size: int = 473
    class_id: int | None = None
    inner_steps: int = 200
    inner_lr: float = 0.1
    inner_optimizer: str = "sgd"
    inner_init: str = "torch"
    seed: int = 0
    batch_size: int = 8


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
    **settings,
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
      **settings: fields of `Settings` (image_size=473, inner_steps=200, ...).

    Returns:
      One uint8 (H, W) mask per query, at its size: 1 foreground, 0 background.
    """
    model = models.PSPNet(layers=layers, width=width, bottleneck_dim=bottleneck_dim)
    return [
        prediction["cwt"]
        for prediction in predictions(
            model,
            backbone_variables,
            cwt_params,
            support_images,
            support_masks,
            query_images,
            Settings(**settings),
            inner_params=inner_params,
        )
    ]


def predictions(
    model: models.PSPNet,
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
      model: the PSPNet the variables belong to.
      backbone_variables: its variables.
      cwt_params: transformer parameters.
      support_images: K uint8 (H, W, 3) RGB images.
      support_masks: their (H, W) masks (see `foreground_mask`).
      query_images: uint8 (H, W, 3) RGB images.
      settings: how to segment.
      inner_params: the inner loop's meta-learned parts (`load_checkpoints`): a learned
        initialisation (used with `inner_init="learned"`) and learning-rate factors.

    Yields:
      {"cwt": (H, W), "support_only": (H, W)} uint8 {0, 1} masks of each query, in order.
    """
    inner_params = inner_params or {}
    if settings.inner_init == "learned" and "init" not in inner_params:
        raise errors.ConfigError(
            "inner_init='learned' needs the learned initialisation: pass inner_params "
            "(`load_checkpoints`) or another inner_init."
        )
    for index, (image, mask) in enumerate(zip(support_images, support_masks, strict=True)):
        check_support(image, mask, settings, f"support {index}")
    for index, image in enumerate(query_images):
        check_image(image, settings.image_size, f"query {index}")
    weights = fit_support_classifier(
        model, backbone_variables, support_images, support_masks, settings, inner_params
    )
    size = (settings.image_size, settings.image_size)
    for start in range(0, len(query_images), settings.batch_size):
        batch = query_images[start : start + settings.batch_size]
        inputs = [preprocess(image, _unlabelled(image), settings.image_size)[0] for image in batch]
        # A full batch, the last padded, so that every batch runs the same programs.
        features = models.apply_backbone(
            model, backbone_variables, padded_batch(np.stack(inputs), settings.batch_size)
        )
        differences = jax.device_get(query_logit_differences(cwt_params, weights, features, size))
        for row, image in enumerate(batch):
            yield {
                method: (
                    at_original_size(differences[method][row], image.shape[:2], settings.image_size)
                    > 0
                ).astype(np.uint8)
                for method in METHODS
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

    Evaluation run 0 keys its episodes by `fewshot.episode_keys` under this run key, so
    `--seed=S` starts from the classifier of episode 0 of `mode=eval` with `seed=S`.

    Args:
      seed: the seed.

    Returns:
      The key of `fewshot.init_classifier`.
    """
    init_key, _ = fewshot.episode_keys(seeds.key(seed, seeds.Stream.EVALUATION), 0)
    return init_key


@functools.cache
def inner_optimizer(name: str, learning_rate: float):
    """The inner loop's optimiser, built once per setting so `classifier.fit` compiles once.

    Raises:
      ConfigError: naming an optimiser optax does not have.
    """
    return optimizers.build(name, learning_rate, key="inner")


def fit_support_classifier(
    model: models.PSPNet,
    backbone_variables,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    settings: Settings,
    inner_params: dict,
) -> jnp.ndarray:
    """The (2, C) classifier fitted on the supports by the inner loop, once for all queries.

    Args:
      model: the PSPNet.
      backbone_variables: its variables.
      support_images: K uint8 (H, W, 3) RGB images.
      support_masks: their masks (see `foreground_mask`).
      settings: how to fit.
      inner_params: the inner loop's meta-learned parts (`load_checkpoints`).

    Returns:
      (2, C) weights.
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
    init = fewshot.init_classifier(
        classifier_init_key(settings.seed), inner_params, model.bottleneck_dim, settings.inner_init
    )
    return classifier.fit(
        features,
        np.stack(masks),
        init,
        optimizer=inner_optimizer(settings.inner_optimizer, settings.inner_lr),
        steps=settings.inner_steps,
        log_learning_rate=inner_params.get("log_lr"),
    )


@functools.partial(jax.jit, static_argnames="size")
def query_logit_differences(
    cwt_params, weights: jnp.ndarray, query_features: jnp.ndarray, size: tuple[int, int]
) -> dict[str, jnp.ndarray]:
    """Logit differences of a batch of queries, with and without the CWT.

    Per query `fewshot.adapt_to_query`: the CWT adapts `weights` to the query's
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
        adapted, normalized = fewshot.adapt_to_query(cwt_params, weights, features)
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


def agreement(cwt_mask: np.ndarray, support_only_mask: np.ndarray) -> dict[str, float]:
    """How a query's CWT and support-only masks compare.

    Args:
      cwt_mask: (H, W) {0, 1} mask of the CWT.
      support_only_mask: (H, W) {0, 1} mask of the support classifier.

    Returns:
      {"foreground_fraction", "support_only_foreground_fraction", "agreement" (fraction
      of pixels where the two agree), "iou_with_support_only" (IoU of the two
      foregrounds; 1 when both are empty)}.
    """
    cwt_foreground, support_foreground = cwt_mask == 1, support_only_mask == 1
    union = np.sum(cwt_foreground | support_foreground)
    intersection = np.sum(cwt_foreground & support_foreground)
    return {
        "foreground_fraction": float(np.mean(cwt_foreground)),
        "support_only_foreground_fraction": float(np.mean(support_foreground)),
        "agreement": float(np.mean(cwt_foreground == support_foreground)),
        "iou_with_support_only": float(intersection / union) if union else 1.0,
    }


# The command line.


class Checkpoints(NamedTuple):
    """What `load_checkpoints` reads.

    Attributes:
      model: the PSPNet of the backbone checkpoint.
      backbone_variables: its variables.
      cwt_params: transformer parameters.
      inner_params: the inner loop's meta-learned parts kept beside the CWT
        (`metatrain.inner_gradient`): `{"init"?, "log_lr"?}` (2, C) arrays, none in a .pth
        file.
    """

    model: models.PSPNet
    backbone_variables: dict
    cwt_params: dict
    inner_params: dict


def load_checkpoints(backbone: str, cwt_checkpoint: str) -> Checkpoints:
    """A backbone and a CWT checkpoint, each read once, their architecture read from them.

    Args:
      backbone: PSPNet .pth file, converted checkpoint or a run's `pretrain/best`.
      cwt_checkpoint: transformer .pth file, converted checkpoint or a run's
        `metatrain/best`.

    Returns:
      The PSPNet, its variables, the transformer parameters and the inner loop's
      meta-learned parts.

    Raises:
      FileNotFoundError, ConversionError: a missing checkpoint, a path that holds none,
        one that holds no PSPNet or no CWT, or a CWT of other channels than the
        backbone's features.
    """
    model, variables = _load_backbone(backbone)
    cwt_params, inner_params = _load_cwt(cwt_checkpoint, model.bottleneck_dim, backbone)
    return Checkpoints(model, variables, cwt_params, inner_params)


def _load_backbone(path: str) -> tuple[models.PSPNet, dict]:
    """The PSPNet of a checkpoint and its variables."""
    is_pth = path.endswith(".pth")
    checkpoint = initialization.read_checkpoint(path, "--backbone")
    try:
        block_stages, width, channels = (
            _pth_pspnet_shapes(checkpoint) if is_pth else _pspnet_shapes(checkpoint["params"])
        )
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"--backbone={path} holds no PSPNet; give a PSPNet .pth file, a converted "
            "PSPNet checkpoint or a run's pretrain/best."
        ) from None
    layers = tuple(block_stages.count(stage) for stage in range(1, 5))
    if min(layers) == 0:
        raise errors.ConversionError(
            f"--backbone={path} has no residual block in some stage (block counts {layers}); "
            "give a complete PSPNet checkpoint."
        )
    model = models.PSPNet(layers=layers, width=width, bottleneck_dim=channels)
    variables = convert.pspnet_from_state_dict(checkpoint, layers, path) if is_pth else checkpoint
    return model, initialization.checked_backbone(variables, model, path, "--backbone")


def _pth_pspnet_shapes(state: dict) -> tuple[list[int], int, int]:
    """The stage of each residual block, the width and the feature channels of a state dict."""
    block_stages = [int(match[1]) for match in map(_PTH_BLOCK.fullmatch, state) if match]
    return block_stages, state["layer0.0.weight"].shape[0], state["bottleneck.0.weight"].shape[0]


def _pspnet_shapes(params: dict) -> tuple[list[int], int, int]:
    """The same of the `params` of PSPNet variables."""
    stages = params["backbone"]
    block_stages = [
        int(name.removeprefix("layer")) for name in stages if name != "layer0" for _ in stages[name]
    ]
    width = stages["layer0"]["conv1"]["kernel"].shape[-1]
    return block_stages, width, params["bottleneck_conv"]["kernel"].shape[-1]


def _load_cwt(path: str, channels: int, backbone: str) -> tuple[dict, dict]:
    """The CWT parameters and inner-loop parts of a checkpoint, for `backbone`'s features."""
    is_pth = path.endswith(".pth")
    checkpoint = initialization.read_checkpoint(path, "--cwt")
    try:
        if is_pth:
            d_model = checkpoint["layer_norm.weight"].shape[0]
            projection = checkpoint["w_qkvs.weight"].shape[0]
        else:
            d_model = checkpoint["params"]["layer_norm"]["scale"].shape[0]
            projection = checkpoint["params"]["w_qkvs"]["kernel"].shape[-1]
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"--cwt={path} holds no CWT; give a transformer .pth file, a converted CWT "
            "checkpoint or a run's metatrain/best."
        ) from None
    if d_model != channels:
        raise errors.ConversionError(
            f"--cwt={path} adapts {d_model}-channel classifiers but --backbone={backbone} "
            f"gives {channels}-channel features; give the CWT meta-trained on this backbone."
        )
    if is_pth:
        params, inner = convert.cwt_from_state_dict(checkpoint, path), {}
    else:
        params, inner = checkpoint["params"], checkpoint.get("inner", {})
    params = initialization.checked_cwt(params, channels, projection // d_model, path, "--cwt")
    return params, jax.tree.map(jnp.asarray, inner)


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


def read_image(path: str, flag: str) -> np.ndarray:
    """Decodes a JPEG or PNG file to uint8 (H, W, 3) RGB, as the datasets' records are.

    Args:
      path: the file.
      flag: the flag that named it, for messages.

    Returns:
      The image.

    Raises:
      FileNotFoundError, DataError: naming the file.
    """
    return codec.decode_image(_read_bytes(path, flag), f"{flag}={path}")


def read_mask(path: str, flag: str) -> np.ndarray:
    """Decodes a single-channel 8-bit PNG mask to uint8 (H, W).

    Args:
      path: the file.
      flag: the flag that named it, for messages.

    Returns:
      The mask.

    Raises:
      FileNotFoundError, DataError: naming the file.
    """
    return codec.decode_mask(_read_bytes(path, flag), f"{flag}={path}")


def _read_bytes(path: str, flag: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}={path} is not a file; check the path.")
    with open(path, "rb") as file:
        return file.read()


def read_supports(
    specs: Sequence[str], settings: Settings
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reads and checks the `--support=IMAGE:MASK` pairs.

    Args:
      specs: the flag's values.
      settings: the image size and `class_id` the masks are checked with.

    Returns:
      The support images and their masks.
    """
    images, masks = [], []
    for spec in specs:
        image_path, separator, mask_path = spec.rpartition(":")
        if not separator or not image_path or not mask_path:
            raise errors.ConfigError(
                f"--support={spec} is not IMAGE:MASK; give an image and its mask PNG "
                "separated by a colon."
            )
        image, mask = read_image(image_path, "--support"), read_mask(mask_path, "--support")
        check_support(image, mask, settings, f"--support={spec}")
        images.append(image)
        masks.append(mask)
    return images, masks


def query_paths(specs: Sequence[str]) -> list[str]:
    """The query images the `--query` values name: files, and the images of folders.

    A folder gives its .jpg, .jpeg and .png files (any case), sorted by name.

    Args:
      specs: the flag's values.

    Returns:
      The image files, in the order given.

    Raises:
      FileNotFoundError, DataError: a missing path, an empty folder, or two queries whose
        outputs would have the same name.
    """
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(
                os.path.join(spec, name)
                for name in os.listdir(spec)
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise errors.DataError(
                    f"--query={spec} holds no .jpg, .jpeg or .png file; give a folder of "
                    "images or image files."
                )
            paths.extend(found)
        elif os.path.exists(spec):
            paths.append(spec)
        else:
            raise FileNotFoundError(f"--query={spec} does not exist; check the path.")
    stems = {}
    for path in paths:
        other = stems.setdefault(output_stem(path), path)
        if other != path:
            raise errors.DataError(
                f"--query={other} and --query={path} would both write "
                f"{output_stem(path)}_mask.png; rename one of them."
            )
    return paths


def output_stem(path: str) -> str:
    """The file name of a query without its extension: `<stem>_mask.png` and so on."""
    return os.path.splitext(os.path.basename(path))[0]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (H, W) mask or (H, W, 3) RGB image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    encoded, content = cv2.imencode(".png", image)
    if not encoded:
        raise OSError(f"OpenCV could not encode an image of shape {image.shape} as PNG.")
    return content.tobytes()


def write_query_outputs(directory: str, path: str, image: np.ndarray, masks: dict) -> dict:
    """Writes a query's mask and overlay and returns its line of `predictions.json`.

    Args:
      directory: the output folder.
      path: the query's file.
      image: its uint8 (H, W, 3) RGB image.
      masks: {"cwt", "support_only"} -> its (H, W) {0, 1} masks.

    Returns:
      The query's entry: its files, size and `agreement`.
    """
    stem = output_stem(path)
    mask_file, overlay_file = f"{stem}_mask.png", f"{stem}_overlay.png"
    files.write_atomically(
        os.path.join(directory, mask_file), png_bytes(masks["cwt"] * np.uint8(255))
    )
    overlay = visualize.overlay(transforms.normalize(image.astype(np.float32)), masks["cwt"])
    files.write_atomically(os.path.join(directory, overlay_file), png_bytes(overlay))
    return {
        "query": path,
        "mask": mask_file,
        "overlay": overlay_file,
        "height": image.shape[0],
        "width": image.shape[1],
        **agreement(masks["cwt"], masks["support_only"]),
    }


def run(
    *,
    backbone: str,
    cwt_checkpoint: str,
    supports: Sequence[str],
    queries: Sequence[str],
    output: str,
    settings: Settings,
) -> None:
    """The command: checks every input, then segments the queries and writes the files.

    Args:
      backbone: `--backbone`.
      cwt_checkpoint: `--cwt`.
      supports: the `--support` values.
      queries: the `--query` values.
      output: `--output`, created if needed.
      settings: the other flags.
    """
    inner_optimizer(settings.inner_optimizer, settings.inner_lr)
    support_images, support_masks = read_supports(supports, settings)
    paths = query_paths(queries)
    query_images = [read_image(path, "--query") for path in paths]
    for path, image in zip(paths, query_images, strict=True):
        check_image(image, settings.image_size, f"--query={path}")
    model, backbone_variables, cwt_params, inner_params = load_checkpoints(backbone, cwt_checkpoint)
    _check_inner_init(inner_params, settings.inner_init, cwt_checkpoint)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as error:
        raise PermissionError(
            f"--output={output} cannot be created ({error.strerror}); choose another folder."
        ) from None
    predicted = predictions(
        model,
        backbone_variables,
        cwt_params,
        support_images,
        support_masks,
        query_images,
        settings,
        inner_params=inner_params,
    )
    entries = [
        write_query_outputs(output, path, image, masks)
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


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Runs the command on the parsed flags; a user's mistake exits with one line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
    settings = Settings(
        **{field.name: flag_values[field.name].value for field in dataclasses.fields(Settings)}
    )
    compilation.use_cache(flag_values.compilation_cache_dir)
    try:
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


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line; missing or invalid flags end the command with one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # one line per missing flag
        sys.exit(f"error: {' '.join(str(error).splitlines())}")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The command's flags: defined only when this module runs as a program (or a test)."""
    defaults = Settings()
    flags.DEFINE_string(
        "backbone", None, "PSPNet .pth file or orbax checkpoint.", flag_values=flag_values
    )
    flags.DEFINE_string("cwt", None, "CWT .pth file or orbax checkpoint.", flag_values=flag_values)
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
        list(fewshot.CLASSIFIER_INITS),
        "Its initialisation; learned: the one meta-learned beside the CWT of --cwt.",
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
    flags.mark_flags_as_required(
        ["backbone", "cwt", "support", "query", "output"], flag_values=flag_values
    )


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
