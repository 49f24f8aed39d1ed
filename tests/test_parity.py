"""The converted JAX model reproduces a PyTorch reference of CWT number for number."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_reference as ref

from cwt_jax.fewshot import classifier, episode, inner
from cwt_jax.models import cwt, extract_features
from cwt_jax.models.pspnet import PyramidBottleneck
from cwt_jax.weights import pytorch

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
    variables = pytorch.load_pspnet(str(path), layers)
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
    params = pytorch.load_cwt(str(path))

    torch_query = torch.nn.functional.normalize(
        torch.from_numpy(reference["torch_features"][5:]).permute(0, 3, 1, 2), dim=1
    )  # (1, C, h, w)
    with torch.no_grad():
        torch_adapted = transformer(torch_weights[None], torch_query, torch_query)
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


@pytest.mark.parametrize("shot", [1, 5])
def test_metatrain_gradient_matches_the_original_training_step(shot, tmp_path):
    """`jax.grad` of `episode.episode_loss` is `src/train.py`'s transformer gradient.

    Dropout off, the same initial classifier weights, a transformer whose parameters are
    all moved away from their initialisation.
    """
    channels, heads, size = 32, 2, 41  # features of 6 x 6
    rng = np.random.RandomState(10 + shot)
    support_features = rng.randn(shot, 6, 6, channels).astype(np.float32)
    query_features = rng.randn(6, 6, channels).astype(np.float32)
    support_masks = (rng.rand(shot, size, size) > 0.6).astype(np.int64)
    query_mask = (rng.rand(size, size) > 0.7).astype(np.int64)
    support_masks[:, :3], query_mask[-4:] = 255, 255
    init = rng.uniform(-(channels**-0.5), channels**-0.5, (2, channels)).astype(np.float32)

    torch.manual_seed(shot)
    transformer = ref.MultiHeadAttentionOne(heads, channels).eval()  # eval: dropout off
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    torch_loss, torch_grads = ref.metatrain_step_gradients(
        transformer,
        torch.from_numpy(support_features).permute(0, 3, 1, 2),
        torch.from_numpy(support_masks),
        torch.from_numpy(query_features).permute(2, 0, 1)[None],
        torch.from_numpy(query_mask)[None],
        torch.from_numpy(init),
        LR,
        STEPS,
    )
    torch.save(transformer.state_dict(), tmp_path / "cwt.pth")
    torch.save(torch_grads, tmp_path / "grads.pth")
    params = pytorch.load_cwt(str(tmp_path / "cwt.pth"))
    expected = pytorch.load_cwt(str(tmp_path / "grads.pth"))  # gradients in the JAX layout
    inner_loop = inner.InnerLoop(
        optimizer=optax.sgd(LR), steps=STEPS, init="torch", learn_lr=False, gradient="none"
    )

    def loss_of(cwt_params):
        return episode.episode_loss(
            {"cwt": cwt_params, "inner": {}},
            jnp.asarray(support_features),
            jnp.asarray(support_masks),
            jnp.asarray(query_features),
            jnp.asarray(query_mask),
            jnp.asarray(init),
            inner_loop,
        )

    loss, grads = jax.value_and_grad(loss_of)(params)
    scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(expected))
    assert abs(float(loss) - torch_loss) <= 1e-5 * torch_loss
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        true = flat_expected[path]
        # The layer norm's bias shifts both class weights alike: its true gradient is 0.
        denominator = scale if "layer_norm" in name and "bias" in name else np.abs(true).max()
        error = float(np.abs(np.asarray(grad) - true).max() / denominator)
        assert error <= 1e-4, (name, error)
