"""Checkpoint conversion: by name, strict, and written as orbax checkpoints."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torch_reference as ref

from cwt_jax import errors, models
from cwt_jax.models import PSPNet, cwt, resnet
from cwt_jax.weights import checkpoints, pytorch

BLOCKS, WIDTH, BOTTLENECK = (1, 2, 1, 1), 8, 16


def pspnet_state():
    torch.manual_seed(0)
    return dict(ref.PSPNet(BLOCKS, WIDTH, BOTTLENECK).state_dict())


def save(path, state, wrap=True):
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    return str(path)


def test_pspnet_loads_with_module_prefix_and_bare_dicts(tmp_path):
    state = pspnet_state()
    prefixed = pytorch.load_pspnet(
        save(tmp_path / "a.pth", {f"module.{k}": v for k, v in state.items()}), BLOCKS
    )
    bare = pytorch.load_pspnet(save(tmp_path / "b.pth", state, wrap=False), BLOCKS)
    assert jax.tree.all(jax.tree.map(np.array_equal, prefixed, bare))
    stem_kernel = prefixed["params"]["backbone"]["layer0"]["conv1"]["kernel"]
    np.testing.assert_array_equal(
        stem_kernel, state["layer0.0.weight"].numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        prefixed["batch_stats"]["ppm"]["bn3"]["var"], state["ppm.features.3.2.running_var"].numpy()
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("layer2.1.conv2.weight"), "missing keys layer2.1.conv2.weight"),
        (lambda s: s.update({"aux.0.weight": torch.zeros(3)}), "unexpected keys aux.0.weight"),
        (
            lambda s: s.update({"ppm.features.1.1.weight": torch.zeros(4, 256, 1, 1)}),
            "mis-shaped keys ppm.features.1.1.weight (4, 256, 1, 1) (expected (64, 256, 1, 1))",
        ),
    ],
)
def test_pspnet_misfits_name_the_key(tmp_path, edit, message):
    state = pspnet_state()
    edit(state)
    with pytest.raises(errors.ConversionError) as error:
        pytorch.load_pspnet(save(tmp_path / "bad.pth", state), BLOCKS)
    assert message in str(error.value)


def test_pspnet_of_other_depth_is_refused(tmp_path):
    path = save(tmp_path / "shallow.pth", pspnet_state())
    with pytest.raises(
        errors.ConversionError, match=r"missing keys layer2\.2\.bn1\.bias, .* and 5 more"
    ):
        pytorch.load_pspnet(path, (1, 3, 1, 1))
    with pytest.raises(errors.ConversionError, match=r"unexpected keys layer2\.1\.bn1\.bias"):
        pytorch.load_pspnet(path, (1, 1, 1, 1))


def test_extract_features_refuses_variables_of_another_architecture():
    model = PSPNet((1, 1, 2, 1), width=8, bottleneck_dim=16)
    variables = models.init_variables(model, jax.random.key(0))
    images = jnp.zeros((1, 33, 33, 3))
    message = r"not those of a PSPNet with layers=\(1, 1, 1, 1\), width=8, bottleneck_dim=16"
    with pytest.raises(ValueError, match=message):
        models.extract_features(variables, images, layers=(1, 1, 1, 1), width=8, bottleneck_dim=16)
    features = models.extract_features(
        variables, images, layers=(1, 1, 2, 1), width=8, bottleneck_dim=16
    )
    assert features.shape == (1, 5, 5, 16)


def test_unreadable_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth does not exist"):
        pytorch.load_pspnet(str(tmp_path / "nothing.pth"), 50)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(errors.ConversionError, match="text.pth is not a readable PyTorch"):
        pytorch.load_cwt(str(tmp_path / "text.pth"))
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(errors.ConversionError, match="empty.pth holds no state dict"):
        pytorch.load_cwt(str(tmp_path / "empty.pth"))
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(errors.ConversionError, match="other.pth has no key 'layer0.0.weight'"):
        pytorch.load_pspnet(str(tmp_path / "other.pth"), 50)


def test_imagenet_resnet_matches_pytorch_layer4(tmp_path):
    """An ImageNet file (fc included) initialises the dilated backbone: same layer4 output."""
    torch.manual_seed(1)
    imagenet = ref.DeepBaseResNet(BLOCKS, WIDTH)
    with torch.no_grad():
        ref.randomize_batch_norm(imagenet, torch.Generator().manual_seed(1))
    variables = pytorch.load_resnet(
        save(tmp_path / "resnet.pth", imagenet.state_dict(), False), BLOCKS
    )
    net = ref.PSPNet(BLOCKS, WIDTH, BOTTLENECK, resnet=imagenet).eval()
    images = np.random.RandomState(0).randn(2, 41, 41, 3).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        for layer in (net.layer0, net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
    model = resnet.DilatedResNet(BLOCKS, WIDTH)
    features = model.apply(variables, jnp.asarray(images), train=False)
    np.testing.assert_allclose(features, x.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)


def test_imagenet_resnet_refuses_a_pspnet_file(tmp_path):
    with pytest.raises(errors.ConversionError, match="has no key 'conv1.weight'"):
        pytorch.load_resnet(save(tmp_path / "psp.pth", pspnet_state()), BLOCKS)


@pytest.mark.parametrize("heads", [1, 4])
def test_cwt_heads_are_read_from_shapes(tmp_path, heads):
    transformer = ref.MultiHeadAttentionOne(heads, 32)
    params = pytorch.load_cwt(save(tmp_path / "cwt.pth", transformer.state_dict()))
    assert params["w_qkvs"]["kernel"].shape == (32, heads * 32)
    np.testing.assert_array_equal(params["fc"]["kernel"], transformer.fc.weight.detach().numpy().T)
    weights, query = np.random.RandomState(0).randn(2, 2, 32).astype(np.float32)
    query_map = torch.from_numpy(query.T)[None, :, None]  # (1, C, h = 1, w = 2)
    with torch.no_grad():
        expected = transformer.eval()(torch.from_numpy(weights)[None], query_map, query_map)
    np.testing.assert_allclose(cwt.apply(params, weights, query[None]), expected[0], atol=1e-5)


def test_cwt_misfits_are_reported(tmp_path):
    state = dict(ref.MultiHeadAttentionOne(2, 32).state_dict())
    state["w_qkvs.weight"] = torch.zeros(50, 32)
    with pytest.raises(errors.ConversionError, match="w_qkvs.weight has 50 rows"):
        pytorch.load_cwt(save(tmp_path / "rows.pth", state))
    state = dict(ref.MultiHeadAttentionOne(2, 32).state_dict())
    del state["fc.bias"]
    with pytest.raises(errors.ConversionError, match="missing keys fc.bias"):
        pytorch.load_cwt(save(tmp_path / "bias.pth", state))


def test_command_line_writes_orbax_checkpoint(tmp_path):
    state = pspnet_state()
    source = save(tmp_path / "psp.pth", state)
    output = tmp_path / "converted"
    command = [sys.executable, "-m", "cwt_jax.convert", "--format=pspnet", "--layers=1,2,1,1"]
    first = subprocess.run(
        [*command, f"--input={source}", f"--output={output}"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert first.stdout.splitlines() == [f"Wrote the pspnet weights of {source} to {output}"]
    restored = checkpoints.load_tree(str(output))
    direct = pytorch.load_pspnet(source, BLOCKS)
    assert jax.tree.all(jax.tree.map(np.array_equal, restored, direct))
    model = PSPNet(BLOCKS, WIDTH, BOTTLENECK)
    assert model.apply(restored, jnp.zeros((1, 17, 17, 3))).shape == (1, 3, 3, BOTTLENECK)
    again = subprocess.run(
        [*command, f"--input={source}", f"--output={output}"], capture_output=True, text=True
    )
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_path_that_is_no_checkpoint_is_named_with_its_key(tmp_path):
    """An empty folder, a folder of images, an image, a run's work dir and a stage's
    `latest` (a train state, no `variables`): one error naming the key and the path, not
    orbax's AttributeError."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    latest = checkpoints.manager(str(tmp_path / "run" / "pretrain" / "latest"))
    latest.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": np.ones(2)})))
    latest.wait_until_finished()
    for path in ("empty", "images", "images/a.png", "run", "run/pretrain/latest"):
        with pytest.raises(errors.ConversionError) as error:
            checkpoints.load_tree(str(tmp_path / path), "init.backbone")
        assert str(error.value).startswith(
            f"init.backbone={tmp_path / path} is not an orbax checkpoint; give a converted "
        )
    with pytest.raises(FileNotFoundError, match="init.cwt=.*missing does not exist"):
        checkpoints.load_tree(str(tmp_path / "missing"), "init.cwt")
