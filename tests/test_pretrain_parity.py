"""Stage 1 trains as RePRI's `src/train.py`: loss, schedule, SGD steps, batch norm, sharding."""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_reference as ref
from jax.sharding import Mesh

from cwt_jax import optimizers, sharding
from cwt_jax.fewshot import losses
from cwt_jax.models import PSPNet
from cwt_jax.training import loop, pretrain
from cwt_jax.weights import pytorch

BLOCKS, WIDTH, BOTTLENECK_DIM = (1, 1, 1, 1), 8, 64
NUM_CLASSES, IMAGES, SIZE = 6, 4, 41  # features of 6 x 6
SMOOTHING = 0.1
TOTAL_STEPS = 3  # a short cosine schedule: its second step is 3/4 of the first
# Float32 gradients are ~1e-5 from exact here: the pyramid's 1x1 branch normalises 4 values
# per channel (one per image), and batch norm's backward over so few values cancels digits.
UPDATE_TOLERANCE = 3e-5


def section(lr: float = 0.05) -> ml_collections.ConfigDict:
    """A `pretrain` config section with RePRI's optimiser and final learning rate."""
    return ml_collections.ConfigDict(
        {
            "optimizer": "sgd",
            "optimizer_args": {"momentum": 0.9, "nesterov": True},
            "lr": lr,
            "final_lr": 1e-6,
            "weight_decay": 1e-4,
        }
    )


def repri_loss(logits, targets, smoothing):
    """RePRI's `compute_loss` (without mixup) and `cross_entropy` on (N, C, H, W) logits."""
    batch, height, width = targets.shape
    num_classes = logits.shape[1]
    one_hot = torch.zeros(batch, num_classes, height, width)
    new_target = targets.clone().unsqueeze(1)
    new_target[new_target == 255] = 0
    one_hot.scatter_(1, new_target, 1)
    one_hot = one_hot * (1 - smoothing) + (1 - one_hot) * smoothing / (num_classes - 1)
    loss = -(one_hot * F.log_softmax(logits, dim=1)).sum(dim=1)
    return loss.masked_select(targets.ne(255)).mean()


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


def update_error(new, expected, old) -> float:
    """Error of a parameter's change relative to the change, beyond one float32 rounding.

    The new value is rounded to float32 once, so the two frameworks can differ by one unit
    in the last place of the parameter however exactly they compute the update; for a
    batch-norm scale near 1 moved by 1e-4 that alone is 1e-3 of the update.
    """
    new, expected = np.asarray(new, np.float64), np.asarray(expected, np.float64)
    rounding = np.spacing(np.abs(expected).astype(np.float32))
    excess = np.maximum(np.abs(new - expected) - rounding, 0.0)
    return float(excess.max() / np.abs(expected - old).max())


def worst(errors) -> tuple[str, float]:
    """The largest error of a pytree of errors, with its path."""
    path, error = max(jax.tree_util.tree_leaves_with_path(errors), key=lambda item: item[1])
    return jax.tree_util.keystr(path), error


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_repri(smoothing):
    rng = np.random.RandomState(1)
    logits = rng.randn(3, 7, 5, 4).astype(np.float32)
    labels = rng.randint(0, 4, (3, 7, 5))
    labels[0, :2] = 255
    expected = repri_loss(
        torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(labels), smoothing
    )
    actual = losses.cross_entropy(jnp.asarray(logits), labels, label_smoothing=smoothing)
    np.testing.assert_allclose(actual, expected.item(), rtol=1e-6)
    assert (
        losses.cross_entropy(
            jnp.asarray(logits), np.full((3, 7, 5), 255), label_smoothing=smoothing
        )
        == 0.0
    )


def test_learning_rate_schedule_matches_repri():
    """`CosineAnnealingLR(T_max=T, eta_min=1e-6)` stepped after every iteration."""
    config, total_steps = section(lr=0.0025), 10
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, total_steps, eta_min=config.final_lr
    )
    expected = []
    for _ in range(total_steps + 1):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    schedule = pretrain.learning_rate_schedule(config, total_steps)
    actual = [float(schedule(step)) for step in range(total_steps + 1)]
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert actual[-2] > config.final_lr  # the last step (T - 1) does not reach final_lr


@pytest.fixture(scope="module")
def reference():
    """A small torch PSPNet (dropout off) with randomised BN, and a batch of 4 images."""
    torch.manual_seed(0)
    net = ref.PSPNet(BLOCKS, WIDTH, BOTTLENECK_DIM, classes=NUM_CLASSES)
    net.bottleneck[3].p = 0.0  # model.dropout = 0 on the JAX side
    with torch.no_grad():
        ref.randomize_batch_norm(net, torch.Generator().manual_seed(0))
    rng = np.random.RandomState(0)
    images = rng.randn(IMAGES, SIZE, SIZE, 3).astype(np.float32)
    masks = rng.randint(0, NUM_CLASSES, (IMAGES, SIZE, SIZE))
    masks[:, :5] = 255
    masks[1, :, -7:] = 255
    return {"net": net, "images": images, "masks": masks}


def float32_variables(net, directory) -> tuple[dict, jnp.ndarray]:
    """Rounds the torch PSPNet's tensors to float32 in place; returns them in the JAX layout.

    Returns:
      The PSPNet variables and the (classes, C) base classifier.
    """
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.float())
    path = directory / "pspnet.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    classifier_weights = net.classifier.weight.detach()[:, :, 0, 0].float().numpy()
    return pytorch.load_pspnet(str(path), BLOCKS), jnp.asarray(classifier_weights)


def stage1_step(config):
    """`pretrain.make_train_step` with the optimiser `pretrain.pretrain` builds, dropout off."""
    schedule = pretrain.learning_rate_schedule(config, TOTAL_STEPS)
    optimizer = optimizers.from_config(config, "pretrain", schedule)
    model = PSPNet(layers=BLOCKS, width=WIDTH, bottleneck_dim=BOTTLENECK_DIM, dropout=0.0)
    return pretrain.make_train_step(model, optimizer, schedule, SMOOTHING), optimizer


def initial_state(variables, classifier_weights, optimizer) -> dict:
    params = {"pspnet": variables["params"], "classifier": classifier_weights}
    return loop.new_train_state(params, optimizer, batch_stats=variables["batch_stats"])


def test_two_sgd_steps_match_repri(reference, tmp_path):
    """Loss, lr, parameters and running statistics of two steps against RePRI's, in float64.

    Parameters are compared through their change (the step's update), running statistics
    as they are (PyTorch updates the running variance with the unbiased batch variance).
    Both frameworks start each step from the same float32 parameters, and the JAX side
    carries its own momentum from step 1 into step 2. Restarting step 2 from PyTorch's
    parameters is needed because this small network has ReLU inputs within 1e-6 of zero:
    float32 round-off in step 1 can move one across zero, which changes a layer's next
    gradient by a few percent, in PyTorch as much as in JAX.
    """
    config = section()
    net = copy.deepcopy(reference["net"]).double().train()
    train_step, optimizer = stage1_step(config)
    state = initial_state(*float32_variables(net, tmp_path), optimizer)
    torch_optimizer = torch.optim.SGD(
        net.parameters(),
        lr=config.lr,
        momentum=config.optimizer_args.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.optimizer_args.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch_optimizer, TOTAL_STEPS, eta_min=config.final_lr
    )
    images = torch.from_numpy(reference["images"]).permute(0, 3, 1, 2).double()
    masks = torch.from_numpy(reference["masks"])
    batch = {"image": jnp.asarray(reference["images"]), "mask": jnp.asarray(reference["masks"])}
    for step in range(2):
        variables, classifier_weights = float32_variables(net, tmp_path)
        params = {"pspnet": variables["params"], "classifier": classifier_weights}
        state = {**state, "params": params, "batch_stats": variables["batch_stats"]}
        lr = torch_optimizer.param_groups[0]["lr"]
        logits = F.interpolate(
            net.classifier(net.extract_features(images)),
            (SIZE, SIZE),
            mode="bilinear",
            align_corners=True,
        )
        loss = repri_loss(logits, masks, SMOOTHING)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()
        scheduler.step()

        state, metrics = train_step(state, batch, jax.random.key(step))
        expected, expected_classifier = float32_variables(net, tmp_path)
        expected_params = {"pspnet": expected["params"], "classifier": expected_classifier}
        assert abs(float(metrics["loss"]) - loss.item()) <= 1e-6 * loss.item()
        assert abs(float(metrics["lr"]) - lr) <= 1e-6 * lr
        update_errors = jax.tree.map(
            lambda new, true, old: update_error(new, true, np.asarray(old, np.float64)),
            state["params"],
            expected_params,
            params,
        )
        statistics_errors = jax.tree.map(
            relative_error, state["batch_stats"], expected["batch_stats"]
        )
        assert worst(update_errors)[1] < UPDATE_TOLERANCE, (step, worst(update_errors))
        assert worst(statistics_errors)[1] < 5e-6, (step, worst(statistics_errors))


def test_sharded_step_equals_single_device_step(reference, tmp_path):
    """One step on 4 devices, an image each, equals it on 1: batch norm sees the whole batch.

    Batch norm over each device's image alone would change every output of the step.
    """
    assert jax.device_count() >= 4  # tests/conftest.py asks XLA for 4 CPU devices
    train_step, optimizer = stage1_step(section())
    state = initial_state(*float32_variables(reference["net"], tmp_path), optimizer)
    batch = {"image": reference["images"], "mask": reference["masks"]}
    results = []
    for devices in (1, 4):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), (sharding.DATA_AXIS,))
        step_output = train_step(
            sharding.replicate(state, mesh), sharding.shard_batch(batch, mesh), jax.random.key(0)
        )
        results.append(jax.device_get(step_output))
    single, sharded = results
    errors = jax.tree.map(relative_error, sharded, single)
    assert worst(errors)[1] < UPDATE_TOLERANCE, worst(errors)
