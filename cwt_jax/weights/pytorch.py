"""Conversion of PyTorch checkpoints (.pth) to the pytrees of cwt-jax, by parameter name.

Three formats are read:
  * PSPNet checkpoints released with CWT and RePRI: `{"state_dict": {...}}`, keys possibly
    prefixed `module.`, the stem as `layer0.{0,1,3,4,6,7}`, `ppm.features.{i}.{1,2}`,
    `bottleneck.{0,1}` and the base `classifier` (not converted);
  * CWT transformer checkpoints: `w_qkvs.weight`, `fc.weight`, `fc.bias`, `layer_norm.*`;
  * ImageNet deep-base ResNets (`resnet50_v2.pth` layout: `conv1`, `bn1`, ..., `layer4`,
    `fc` not converted), to initialise stage-1 training;
  * DINOv2 hub backbones (`dinov2_vits14_pretrain.pth`, ...): `cls_token`, `pos_embed`,
    `register_tokens`, `patch_embed.proj.*`, `blocks.N.*`, `norm.*` (`mask_token`, used
    only in DINOv2's training, not converted); the architecture is read from the shapes.

Conversion is strict: every missing, unexpected or mis-shaped key is reported by name.

The command line that writes them as orbax checkpoints is `python -m cwt_jax.convert`.
"""

import re
from collections.abc import Callable, Sequence

import flax.traverse_util
import jax
import numpy as np

from cwt_jax.errors import ConversionError
from cwt_jax.models import cwt, pspnet, resnet, vit

_STEM_CONVS = {"conv1": 0, "conv2": 3, "conv3": 6}
_STEM_NORMS = {"bn1": 1, "bn2": 4, "bn3": 7}
_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_NOT_CONVERTED = re.compile(r"(^|\.)num_batches_tracked$")
_DINOV2_BLOCK = re.compile(r"blocks\.(\d+)\.norm1\.weight")


def load_pspnet(path: str, layers: int | Sequence[int]) -> dict:
    """Converts a PSPNet checkpoint to eval-ready flax variables of `PSPNet`.

    The ResNet width and feature channels are read from the file's stem and bottleneck.

    Args:
      path: .pth file.
      layers: ResNet depth (50 or 101) or four block counts.

    Returns:
      `{"params": ..., "batch_stats": ...}` for `cwt_jax.models.PSPNet`.
    """
    return pspnet_from_state_dict(read_state_dict(path), layers, path)


def pspnet_from_state_dict(
    state: dict[str, np.ndarray], layers: int | Sequence[int], path: str
) -> dict:
    """`load_pspnet` of a state dict already read (`read_state_dict`).

    Args:
      state: parameter name -> array.
      layers: ResNet depth (50 or 101) or four block counts.
      path: the file it was read from, for error messages.

    Returns:
      `{"params": ..., "batch_stats": ...}` for `cwt_jax.models.PSPNet`.
    """
    width = _shape_of(state, "layer0.0.weight", path)[0]
    bottleneck_dim = _shape_of(state, "bottleneck.0.weight", path)[0]
    model = pspnet.PSPNet(layers=layers, width=width, bottleneck_dim=bottleneck_dim)
    expected = jax.eval_shape(lambda: resnet.init_variables(model, jax.random.key(0)))
    return _convert(state, expected, _pspnet_key, {"classifier.weight"}, path, f"PSPNet-{layers}")


def load_resnet(path: str, layers: int | Sequence[int]) -> dict:
    """Converts an ImageNet deep-base ResNet to flax variables of `DilatedResNet`.

    Args:
      path: .pth file in the `resnet50_v2.pth` layout.
      layers: ResNet depth (50 or 101) or four block counts.

    Returns:
      `{"params": ..., "batch_stats": ...}` for the PSPNet's `backbone` submodule.
    """
    state = read_state_dict(path)
    width = _shape_of(state, "conv1.weight", path)[0]
    model = resnet.DilatedResNet(layers=layers, width=width)
    expected = jax.eval_shape(lambda: resnet.init_variables(model, jax.random.key(0)))
    return _convert(
        state, expected, _resnet_key, {"fc.weight", "fc.bias"}, path, f"ResNet-{layers}"
    )


def load_cwt(path: str) -> dict:
    """Converts a CWT transformer checkpoint; the number of heads is read from the shapes.

    Args:
      path: .pth file of CWT's `MultiHeadAttentionOne`.

    Returns:
      Parameters for `cwt_jax.cwt.apply`.
    """
    return cwt_from_state_dict(read_state_dict(path), path)


def cwt_from_state_dict(state: dict[str, np.ndarray], path: str) -> dict:
    """`load_cwt` of a state dict already read (`read_state_dict`).

    Args:
      state: parameter name -> array.
      path: the file it was read from, for error messages.

    Returns:
      Parameters for `cwt_jax.cwt.apply`.
    """
    d_model = _shape_of(state, "layer_norm.weight", path)[0]
    projection = _shape_of(state, "w_qkvs.weight", path)[0]
    if projection % d_model:
        raise ConversionError(
            f"{path}: w_qkvs.weight has {projection} rows, not a multiple of the "
            f"{d_model} channels of layer_norm.weight; this is not a CWT checkpoint."
        )
    expected = jax.eval_shape(lambda: cwt.init(jax.random.key(0), d_model, projection // d_model))
    return _convert(state, {"params": expected}, _cwt_key, set(), path, "CWT")["params"]


def load_dinov2(path: str) -> tuple[vit.Architecture, dict]:
    """Converts an official DINOv2 hub checkpoint; the architecture is read from the shapes.

    Args:
      path: .pth file (`dinov2_vits14_pretrain.pth`, `dinov2_vits14_reg4_pretrain.pth`, ...).

    Returns:
      The architecture and `{"params": ...}` for `cwt_jax.models.vit.DinoV2`.
    """
    return dinov2_from_state_dict(read_state_dict(path), path)


def dinov2_architecture(state: dict[str, np.ndarray], path: str) -> vit.Architecture:
    """The DINOv2 architecture a state dict's shapes describe.

    Width from `cls_token`, depth from the blocks' `norm1`, registers from
    `register_tokens`, the FFN from `mlp.w12` (SwiGLU) and the position grid from
    `pos_embed`; heads are width / 64, as in every hub model.

    Args:
      state: parameter name -> array.
      path: the file it was read from, for error messages.

    Returns:
      The architecture.
    """
    width = _shape_of(state, "cls_token", path)[-1]
    depth = sum(1 for key in state if _DINOV2_BLOCK.fullmatch(key))
    positions = _shape_of(state, "pos_embed", path)[1] - 1
    grid = round(positions**0.5)
    if width % vit.HEAD_WIDTH or grid * grid != positions:
        raise ConversionError(
            f"{path}: cls_token has {width} channels (not a multiple of 64) or pos_embed "
            f"{positions} patch positions (not a square); this is not a DINOv2 checkpoint."
        )
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    ffn = "swiglu" if "blocks.0.mlp.w12.weight" in state else "mlp"
    return vit.Architecture(width, depth, width // vit.HEAD_WIDTH, registers, ffn, grid)


def dinov2_from_state_dict(
    state: dict[str, np.ndarray], path: str
) -> tuple[vit.Architecture, dict]:
    """`load_dinov2` of a state dict already read (`read_state_dict`).

    Args:
      state: parameter name -> array.
      path: the file it was read from, for error messages.

    Returns:
      The architecture and `{"params": ...}` for `cwt_jax.models.vit.DinoV2`.
    """
    architecture = dinov2_architecture(state, path)
    model = vit.DinoV2(architecture)
    expected = jax.eval_shape(lambda: resnet.init_variables(model, jax.random.key(0)))
    name = vit.preset_name(architecture) or f"a DINOv2 ViT {architecture}"
    return architecture, _convert(state, expected, _dinov2_key, {"mask_token"}, path, name)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads the tensors of a .pth file as NumPy arrays, without `module.` prefixes.

    Args:
      path: .pth file holding a state dict, or a dict with one under "state_dict".

    Returns:
      Parameter name -> float32 array (integer buffers keep their dtype).
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading .pth files needs PyTorch; install it with `pip install 'cwt-jax[torch]'`."
        ) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path} does not exist; check the checkpoint path.") from error
    except Exception as error:
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ConversionError(
            f"{path} holds no state dict of tensors (directly or under 'state_dict')."
        )
    return {
        key.removeprefix("module."): tensor.detach()
        .numpy()
        .astype(np.float32 if tensor.is_floating_point() else tensor.numpy().dtype)
        for key, tensor in loaded.items()
    }


def _shape_of(state: dict, key: str, path: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"{path} has no key '{key}'; is it the right kind of checkpoint?")
    return state[key].shape


def _convert(
    state: dict[str, np.ndarray],
    expected,
    torch_key: Callable[[tuple[str, ...]], str],
    known_extra: set[str],
    path: str,
    model_name: str,
) -> dict:
    """Fills the shapes of `expected` from `state`, reporting every misfit by name."""
    arrays, used, missing, misshaped = {}, set(), [], []
    for flax_path, target in flax.traverse_util.flatten_dict(expected).items():
        name = torch_key(flax_path)
        if name not in state:
            missing.append(name)
            continue
        used.add(name)
        array = _to_flax_layout(state[name])
        if array.shape != target.shape:
            misshaped.append(
                f"{name} {state[name].shape} (expected {_to_torch_shape(target.shape)})"
            )
        arrays[flax_path] = array
    unexpected = sorted(
        key
        for key in state
        if key not in used and key not in known_extra and not _NOT_CONVERTED.search(key)
    )
    problems = [
        f"{label} {_name_list(keys)}"
        for label, keys in [
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        ]
        if keys
    ]
    if problems:
        raise ConversionError(
            f"{path} does not fit {model_name}: {'; '.join(problems)}; check the model "
            "depth and that the file is the right kind of checkpoint."
        )
    return flax.traverse_util.unflatten_dict(arrays)


def _name_list(keys: list[str], shown: int = 10) -> str:
    """Sorted, comma-separated names, the tail summarised past `shown` of them."""
    keys = sorted(keys)
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
    """PyTorch (out, in, kh, kw) convolutions and (out, in) linears to flax kernels."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


def _to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _resnet_module_name(names: Sequence[str]) -> str:
    """Module path inside `DilatedResNet` -> PyTorch name, stem excluded."""
    layer, block, module = names
    module = module.replace("downsample_conv", "downsample.0").replace(
        "downsample_bn", "downsample.1"
    )
    return f"{layer}.{block.removeprefix('block')}.{module}"


def _resnet_key(flax_path: tuple[str, ...]) -> str:
    """ImageNet ResNet name of a `DilatedResNet` variable."""
    _, *modules, leaf = flax_path
    if modules[0] == "layer0":
        return f"{modules[1]}.{_LEAF_NAMES[leaf]}"
    return f"{_resnet_module_name(modules)}.{_LEAF_NAMES[leaf]}"


def _pspnet_key(flax_path: tuple[str, ...]) -> str:
    """PSPNet checkpoint name of a `PSPNet` variable."""
    _, top, *modules, leaf = flax_path
    if top == "backbone" and modules[0] == "layer0":
        index = {**_STEM_CONVS, **_STEM_NORMS}[modules[1]]
        name = f"layer0.{index}"
    elif top == "backbone":
        name = _resnet_module_name(modules)
    elif top == "ppm":
        kind, index = re.fullmatch(r"(conv|bn)(\d+)", modules[0]).groups()
        name = f"ppm.features.{index}.{1 if kind == 'conv' else 2}"
    else:
        name = {"bottleneck_conv": "bottleneck.0", "bottleneck_bn": "bottleneck.1"}[top]
    return f"{name}.{_LEAF_NAMES[leaf]}"


def _cwt_key(flax_path: tuple[str, ...]) -> str:
    """CWT checkpoint name of a transformer parameter."""
    _, module, leaf = flax_path
    return f"{module}.{_LEAF_NAMES[leaf]}"


def _dinov2_key(flax_path: tuple[str, ...]) -> str:
    """Official DINOv2 state-dict name of a `DinoV2` variable."""
    _, *modules, leaf = flax_path
    if not modules:  # cls_token, pos_embed, register_tokens
        return leaf
    top, *rest = modules
    if top.startswith("blocks_"):
        top = f"blocks.{top.removeprefix('blocks_')}"
    return ".".join([top, *rest, "gamma" if leaf == "gamma" else _LEAF_NAMES[leaf]])
