"""The converted JAX model reproduces a PyTorch reference of CWT number for number."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_reference as ref

from cwt_jax import classifier, convert, cwt
from cwt_jax.models import extract_features
from cwt_jax.models.pspnet import PyramidBottleneck

IMAGE_SIZE = 57  # features of 8 x 8
STEPS, LR = 200, 0.1


def relative_error(actual, expected):
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module", params=[50, 101])
def reference(request, tmp_path_factory):
    """A random PSPNet with randomised BN statistics, its .pth file and both models' features."""
    layers = request.param
    torch.manual_seed(layers)
    net = ref.PSPNet({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[layers]).eval()
    with torch.no_grad():
        ref.randomize_batch_norm(net, torch.Generator().manual_seed(layers))
    path = tmp_path_factory.mktemp("pspnet") / "pspnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    images = np.random.RandomState(layers).randn(6, IMAGE_SIZE, IMAGE_SIZE, 3).astype(np.float32)
    with torch.no_grad():
        torch_features = net.extract_features(torch.from_numpy(images).permute(0, 3, 1, 2))
    variables = convert.load_pspnet(str(path), layers)
    jax_features = extract_features(variables, jnp.asarray(images), layers=layers)
    masks = (np.random.RandomState(1).rand(6, IMAGE_SIZE, IMAGE_SIZE) > 0.7).astype(np.int64)
    masks[:, :4] = 255
    return {
        "torch_features": torch_features.permute(0, 2, 3, 1).numpy(),
        "jax_features": np.asarray(jax_features),
        "masks": masks,
    }


def test_features_match(reference, record_property):
    assert reference["jax_features"].shape == (6, 8, 8, 512)
    error = relative_error(reference["jax_features"], reference["torch_features"])
    record_property("features_relative_error", error)
    assert error < 1e-5


@pytest.mark.parametrize("shot", [1, 5])
def test_episode_matches(reference, shot, tmp_path, record_property):
    """Inner loop, CWT and logits of one episode: supports 0..shot-1, query 5."""
    rng = np.random.RandomState(shot)
    init = rng.uniform(-(512**-0.5), 512**-0.5, (2, 512)).astype(np.float32)
    torch_weights = ref.fit_classifier(
        torch.from_numpy(reference["torch_features"][:shot]).permute(0, 3, 1, 2),
        torch.from_numpy(reference["masks"][:shot]),
        torch.from_numpy(init),
        lambda params: torch.optim.SGD(params, lr=LR),
        STEPS,
    )
    jax_weights = classifier.fit(
        jnp.asarray(reference["jax_features"][:shot]),
        jnp.asarray(reference["masks"][:shot]),
        jnp.asarray(init),
        optimizer=optax.sgd(LR),
        steps=STEPS,
    )
    assert np.abs(torch_weights.numpy() - init).max() > 1e-3  # the loop really trained
    errors = {"fit": relative_error(jax_weights, torch_weights.numpy())}

    torch.manual_seed(shot)
    transformer = ref.MultiHeadAttentionOne(4, 512).eval()
    with torch.no_grad():
        transformer.layer_norm.weight.uniform_(0.5, 1.5)
        transformer.layer_norm.bias.normal_(0, 0.1)
    path = tmp_path / "cwt.pth"
    torch.save({"state_dict": transformer.state_dict()}, path)
    params = convert.load_cwt(str(path))

    torch_query = torch.nn.functional.normalize(
        torch.from_numpy(reference["torch_features"][5:]).permute(0, 3, 1, 2), dim=1
    )  # (1, C, h, w)
    query_tokens = torch_query.flatten(2).transpose(1, 2)  # (1, h*w, C)
    with torch.no_grad():
        torch_adapted = transformer(torch_weights[None], query_tokens, query_tokens)
        torch_logits = torch.matmul(torch_adapted, torch_query.flatten(2)).view(1, 2, 8, 8)
    jax_query = cwt.normalize_features(jnp.asarray(reference["jax_features"][5]))
    jax_adapted = cwt.apply(params, jax_weights, jax_query)
    jax_logits = classifier.predict(jax_adapted, jax_query)
    errors["cwt"] = relative_error(jax_adapted, torch_adapted[0].numpy())
    errors["logits"] = relative_error(jax_logits, torch_logits[0].permute(1, 2, 0).numpy())
    for name, error in errors.items():
        record_property(f"{name}_relative_error", error)
    assert max(errors.values()) < 1e-5, errors


def test_pyramid_bottleneck_is_a_convolution_of_the_upsampled_concatenation():
    """Values and gradients, on a non-square map, against PyTorch's upsample, cat and conv."""
    rng = np.random.RandomState(0)
    x = rng.randn(2, 7, 10, 16).astype(np.float32)
    pyramid = [rng.randn(2, bins, bins, 4).astype(np.float32) for bins in (1, 2, 3, 6)]
    kernel = rng.randn(3, 3, 32, 8).astype(np.float32) * 0.1
    cotangent = rng.randn(2, 7, 10, 8).astype(np.float32)

    def jax_loss(kernel, x, pyramid):
        out = PyramidBottleneck(8).apply({"params": {"kernel": kernel}}, x, pyramid)
        return jnp.sum(out * cotangent), out

    (_, jax_out), jax_grads = jax.value_and_grad(jax_loss, argnums=(0, 1, 2), has_aux=True)(
        jnp.asarray(kernel), jnp.asarray(x), [jnp.asarray(level) for level in pyramid]
    )
    torch_inputs = [torch.from_numpy(array).requires_grad_() for array in (kernel, x, *pyramid)]
    torch_kernel, torch_x, *torch_pyramid = torch_inputs
    nchw = [torch_x.permute(0, 3, 1, 2)] + [
        torch.nn.functional.interpolate(
            level.permute(0, 3, 1, 2), size=(7, 10), mode="bilinear", align_corners=True
        )
        for level in torch_pyramid
    ]
    torch_out = torch.nn.functional.conv2d(
        torch.cat(nchw, 1), torch_kernel.permute(3, 2, 0, 1), padding=1
    ).permute(0, 2, 3, 1)
    (torch_out * torch.from_numpy(cotangent)).sum().backward()
    assert relative_error(jax_out, torch_out.detach().numpy()) < 1e-5
    flat_grads = [jax_grads[0], jax_grads[1], *jax_grads[2]]
    for jax_grad, torch_input in zip(flat_grads, torch_inputs, strict=True):
        assert relative_error(jax_grad, torch_input.grad.numpy()) < 1e-5
