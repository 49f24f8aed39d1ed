"""The DINOv2 backbone against a PyTorch reference of the official architecture.

`torch_reference.DinoV2` was checked against facebookresearch/dinov2's own
`DinoVisionTransformer` (hub settings): the same state-dict keys, and the same
`x_norm_patchtokens` to 0 on random models (`scripts/check_dinov2_reference.py`).
"""

import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_reference as ref

from cwt_jax import errors
from cwt_jax.models import resnet, vit
from cwt_jax.weights import checkpoints, loading, pytorch

WIDTH, DEPTH = 128, 2


def reference_model(registers=0, swiglu=False, seed=0):
    torch.manual_seed(seed)
    return ref.DinoV2(WIDTH, DEPTH, registers=registers, swiglu=swiglu).eval()


def converted(model, tmp_path):
    path = tmp_path / "dinov2.pth"
    torch.save(model.state_dict(), path)
    return pytorch.load_dinov2(str(path))


@pytest.mark.parametrize("patches", [3, 8, 34, 36, 38, 40])
def test_position_matrix_is_torch_bicubic(patches):
    """Its rows are F.interpolate's weights to float32 round-off, for grids below and above 37."""
    basis = torch.eye(37).reshape(1, 37, 37, 1)  # channel c: one-hot at row c
    weights = F.interpolate(
        basis, scale_factor=((patches + 0.1) / 37, 1.0), mode="bicubic", antialias=False
    )[0, :, :, 0].numpy()  # (37 inputs, patches outputs)
    np.testing.assert_allclose(vit.position_matrix(37, patches), weights.T, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "registers, swiglu, size", [(0, False, (112, 112)), (4, False, (98, 126)), (0, True, (84, 84))]
)
def test_patch_tokens_match_reference(tmp_path, registers, swiglu, size):
    model = reference_model(registers, swiglu)
    architecture, variables = converted(model, tmp_path)
    assert architecture == vit.Architecture(
        WIDTH, DEPTH, 2, registers, "swiglu" if swiglu else "mlp"
    )
    images = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model.forward_features(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    features = np.asarray(jax.jit(vit.DinoV2(architecture).apply)(variables, images))
    rows, cols = size[0] // 14, size[1] // 14
    assert features.shape == (2, rows, cols, WIDTH)
    np.testing.assert_allclose(features.reshape(2, rows * cols, WIDTH), expected, atol=1e-5)


def test_hub_variant_shapes():
    model = vit.DinoV2(vit.PRESETS["dinov2_vits14_reg"])
    shapes = jax.eval_shape(lambda: resnet.init_variables(model, jax.random.key(0)))["params"]
    assert shapes["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert shapes["register_tokens"].shape == (1, 4, 384)
    assert len([name for name in shapes if name.startswith("blocks_")]) == 12
    assert shapes["blocks_11"]["mlp"]["fc1"]["kernel"].shape == (384, 1536)
    features = jax.eval_shape(
        model.apply, {"params": shapes}, jax.ShapeDtypeStruct((1, 476, 476, 3), np.float32)
    )
    assert features.shape == (1, 34, 34, 384)
    giant = vit.PRESETS["dinov2_vitg14"]
    assert (giant.width, giant.depth, giant.heads, giant.ffn) == (1536, 40, 24, "swiglu")
    assert vit.swiglu_hidden(1536) == 4096
    assert vit.hub_url("dinov2_vitb14_reg") == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("blocks.1.ls2.gamma"), "missing keys blocks.1.ls2.gamma"),
        (lambda s: s.update({"head.weight": torch.zeros(3)}), "unexpected keys head.weight"),
        (
            lambda s: s.update({"blocks.0.attn.qkv.weight": torch.zeros(128, 128)}),
            "mis-shaped keys blocks.0.attn.qkv.weight (128, 128) (expected (384, 128))",
        ),
    ],
)
def test_converter_names_each_misfit(tmp_path, edit, message):
    state = reference_model().state_dict()
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(errors.ConversionError, match="^" + str(path).replace(".", r"\.")) as info:
        pytorch.load_dinov2(str(path))
    assert message in str(info.value)


def test_convert_command_writes_the_orbax_checkpoint_main_reads(tmp_path):
    model = reference_model(registers=4)
    path = tmp_path / "dinov2.pth"
    torch.save(model.state_dict(), path)
    output = tmp_path / "converted"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cwt_jax.convert",
            "--format=dinov2",
            f"--input={path}",
            f"--output={output}",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    configured = vit.DinoV2(vit.PRESETS["dinov2_vits14_reg"])
    read, variables = loading.load_backbone(str(output), configured, "init.backbone")
    assert read.architecture == vit.Architecture(WIDTH, DEPTH, 2, registers=4)
    expected = pytorch.load_dinov2(str(path))[1]
    assert jax.tree.all(jax.tree.map(np.array_equal, variables, expected))


def test_incomplete_converted_checkpoint_is_named(tmp_path):
    """A converted ViT missing a block's MLP: one line from predict's reader and a run's."""
    _, variables = converted(reference_model(), tmp_path)
    del variables["params"]["blocks_0"]["mlp"]
    path = str(tmp_path / "incomplete")
    checkpoints.save_tree(path, variables)
    configured = vit.DinoV2(vit.PRESETS["dinov2_vits14"])
    for read in (
        lambda: loading.read_backbone(path, "--backbone"),
        lambda: loading.load_backbone(path, configured, "init.backbone"),
    ):
        with pytest.raises(errors.ConversionError, match="holds no complete DINOv2 ViT"):
            read()
