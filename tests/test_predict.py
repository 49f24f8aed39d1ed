"""Segmenting one's own images (`cwt_jax.predict`): evaluation's numbers, the way back to
each query's size, the command's files and its user errors.

A tiny random PSPNet and CWT; 64 px images; 5 inner steps.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import cv2
import jax
import ml_collections
import numpy as np
import pytest
import torch
import torch_reference as ref
from absl import flags

from configs import common
from cwt_jax import compilation, data, models, predict, seeds
from cwt_jax.data import transforms
from cwt_jax.evaluation import evaluate
from cwt_jax.fewshot import episode, inner
from cwt_jax.models import cwt
from cwt_jax.predict import command, image_files
from cwt_jax.weights import checkpoints, pytorch

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS, WIDTH, BOTTLENECK, HEADS = (1, 1, 1, 1), 8, 16, 2
# A large step: the random backbone's features are small, and both classes should occur.
SIZE, STEPS, LR, CLASS = 64, 5, 30.0, 1


@pytest.fixture(scope="module")
def model():
    return models.PSPNet(layers=LAYERS, width=WIDTH, bottleneck_dim=BOTTLENECK)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random backbone and CWT (PyTorch's, as released): .pth files, orbax conversions, and
    the variables read from the .pth files."""
    directory = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    pspnet = ref.PSPNet(LAYERS, WIDTH, BOTTLENECK)
    with torch.no_grad():
        ref.randomize_batch_norm(pspnet, torch.Generator().manual_seed(0))
    paths = {name: str(directory / f"{name}.pth") for name in ("backbone", "cwt")}
    torch.save({"state_dict": pspnet.state_dict()}, paths["backbone"])
    torch.save(ref.MultiHeadAttentionOne(HEADS, BOTTLENECK).state_dict(), paths["cwt"])
    backbone = pytorch.load_pspnet(paths["backbone"], LAYERS)
    cwt_params = pytorch.load_cwt(paths["cwt"])
    paths["backbone_orbax"], paths["cwt_orbax"] = str(directory / "b"), str(directory / "c")
    checkpoints.save_tree(paths["backbone_orbax"], backbone)
    checkpoints.save_tree(paths["cwt_orbax"], {"params": cwt_params})
    return backbone, cwt_params, paths


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    """Eight synthetic val images of SIZE px; image 0's first object is of class 1."""
    dataset_dir = data.prepare_synthetic(
        str(tmp_path_factory.mktemp("tfds")), seed=0, num_train=4, num_val=8, image_size=SIZE
    )
    return data.open_split(dataset_dir, "val")


def settings_of(**changes):
    """The command's default settings (`configs/common.py`'s) at SIZE px, STEPS x LR."""
    return predict.Settings.from_config(
        common.base(), image_size=SIZE, inner_steps=STEPS, inner_lr=LR, **changes
    )


def uint8_example(split, index):
    image, mask = split.load(index)
    return image.astype(np.uint8), mask


@pytest.mark.parametrize("objective", ["support", "transductive", "repri"])
def test_predictions_on_padded_size_images_equal_evaluations(model, weights, val_split, objective):
    """On SIZE x SIZE images at image_size=SIZE (no resize, no padding, no crop), the CWT
    and support-only masks of `predict.predictions` from the raw uint8 images and
    class-id masks equal, pixel for pixel, those `evaluate.make_scores` (mode=eval's
    scoring) returns for the episodes `data.episodes_from_list` makes of the same images:
    the query with the same support, class 1. With each inner objective; RePRI's query
    terms over all pixels (a query without a label has no 255 band to leave out).

    Compared exactly: the preprocessed images and masks (predict's against the episodes'),
    then the masks. Evaluation scores features, so it is fed the features predict computes,
    in predict's backbone passes (a batch of 4: XLA's CPU convolutions round differently
    for other batch shapes). Each of its 4 episodes is keyed as episode 0 of the run key
    of `seed`, the key scheme predict uses for its one classifier. The inner loop runs
    vmapped over the 4 episodes in evaluation and once in predict (per query too with the
    objectives that read the query); the CWT and the threshold run vmapped over 4
    queries in both.
    """
    backbone, cwt_params, _ = weights
    # Light query terms: at this step the transductive classifier of the random backbone's
    # features otherwise predicts one class everywhere.
    repri_section = {
        **common.base().inner.repri.to_dict(),
        "query_pixels": "all",
        "weights": (1.0, 0.1, 0.1),
        "fb_param_update": (3,),
    }
    settings = settings_of(
        class_id=CLASS, batch_size=4, inner_objective=objective, repri=repri_section
    )
    support_image, support_mask = uint8_example(val_split, 0)
    queries = [uint8_example(val_split, index)[0] for index in range(1, 5)]
    specs = [
        {"class_id": CLASS, "query_id": val_split.ids[index], "support_ids": [val_split.ids[0]]}
        for index in range(1, 5)
    ]
    records = [data.episodes_from_list(val_split, specs, image_size=SIZE)[i] for i in range(4)]

    support_input, support_input_mask = predict.preprocess(
        support_image, predict.foreground_mask(support_mask, CLASS), SIZE
    )
    query_inputs = np.stack(
        [predict.preprocess(q, np.zeros(q.shape[:2], np.uint8), SIZE)[0] for q in queries]
    )
    for record, query_input in zip(records, query_inputs, strict=True):
        np.testing.assert_array_equal(record["support_images"][0], support_input)
        np.testing.assert_array_equal(record["support_masks"][0], support_input_mask)
        np.testing.assert_array_equal(record["query_image"], query_input)

    support_features = models.apply_backbone(
        model, backbone, predict.padded_batch(support_input[None], 4)
    )[:1]
    query_features = models.apply_backbone(model, backbone, query_inputs)
    inner_config = ml_collections.ConfigDict(
        {"optimizer": "sgd", "optimizer_args": {}, "lr": LR, "weight_decay": 0.0}
        | {"steps": STEPS, "init": "torch", "learn_lr": False, "objective": objective}
        | {"repri": repri_section}
    )
    config = ml_collections.ConfigDict(
        {"inner": inner_config, "metatrain": {"inner_gradient": "none"}}
    )
    batch = {
        "support_features": np.broadcast_to(support_features, (4, *support_features.shape)),
        "support_masks": np.stack([record["support_masks"] for record in records]),
        "query_features": query_features,
        "query_mask": np.stack([record["query_mask"] for record in records]),
        "episode": np.zeros(4, np.int32),
    }
    run_key = seeds.key(settings.seed, seeds.Stream.EVALUATION)
    params = {"cwt": cwt_params, "inner": {}}
    _, expected = evaluate.make_scores(model, inner.from_config(config))(params, batch, run_key)

    predicted = list(
        predict.predictions(
            model, backbone, cwt_params, [support_image], [support_mask], queries, settings
        )
    )
    assert set(expected) == set(predicted[0]) == set(episode.methods(objective))
    for method in expected:
        actual = np.stack([masks[method] for masks in predicted])
        np.testing.assert_array_equal(actual, np.asarray(expected[method]))
        assert 0 < actual.mean() < 1  # both classes occur: the comparison says something


@pytest.mark.parametrize("shape", [(150, 100), (20, 30), (64, 64)])
def test_logits_go_back_to_the_image_size_by_the_inverse_of_its_resize(shape):
    """The unpadded part of the square, resized with half-pixel centres
    (`align_corners=False`): on a logit map linear in x, original pixel X gets the value at
    resized coordinate (X + 0.5) * w / W - 0.5, as the forward resize placed it (here
    clamped at the borders); and it is PyTorch's bilinear `align_corners=False`, to the
    rounding of the source coordinates, which OpenCV and PyTorch both compute in float32
    (an ulp of 8e-6 px at x ~ 100, times slopes up to 3 of the random map)."""
    height, width = transforms.resized_shape(*shape, SIZE)
    columns = np.arange(SIZE, dtype=np.float32)
    difference = np.broadcast_to(columns - 10.25, (SIZE, SIZE)).copy()
    difference[height:] = difference[:, width:] = 1e6  # padding: never read
    back = predict.at_original_size(difference, shape, SIZE)

    assert back.shape == shape
    source = np.clip((np.arange(shape[1]) + 0.5) * width / shape[1] - 0.5, 0, width - 1)
    np.testing.assert_allclose(back, np.broadcast_to(source - 10.25, shape), atol=1e-4)
    rng = np.random.default_rng(0)
    random = rng.normal(size=(SIZE, SIZE)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(random[:height, :width])[None, None],
        size=shape,
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(predict.at_original_size(random, shape, SIZE), expected, atol=5e-5)


def test_segment_returns_masks_at_the_queries_sizes(weights):
    """Any sizes in, the same sizes out; a query's mask does not depend on the other
    queries of its batch (the CWT adapts the classifier to each query alone)."""
    backbone, cwt_params, _ = weights
    rng = np.random.default_rng(0)
    support = rng.integers(0, 256, (50, 70, 3), np.uint8)
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 20:50] = 7
    queries = [rng.integers(0, 256, shape, np.uint8) for shape in ((90, 40, 3), (64, 64, 3))]
    arguments = dict(layers=LAYERS, width=WIDTH, bottleneck_dim=BOTTLENECK)
    settings = settings_of(batch_size=2)
    masks = predict.segment(
        backbone, cwt_params, [support], [mask], queries, **arguments, settings=settings
    )
    assert [m.shape for m in masks] == [(90, 40), (64, 64)]
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)
    alone = predict.segment(
        backbone, cwt_params, [support], [mask], queries[1:], **arguments, settings=settings
    )
    np.testing.assert_array_equal(alone[0], masks[1])


@pytest.fixture
def reads(monkeypatch):
    """The paths of the checkpoints read (`.pth` files and orbax trees), in order."""
    paths = []
    for module, name in ((pytorch, "read_state_dict"), (checkpoints, "load_tree")):
        read = getattr(module, name)

        def recorded(path, *args, read=read):
            paths.append(path)
            return read(path, *args)

        monkeypatch.setattr(module, name, recorded)
    return paths


def test_architecture_is_read_from_pth_and_orbax_checkpoints_each_read_once(
    model, weights, tmp_path, reads
):
    backbone, cwt_params, paths = weights
    for backbone_path, cwt_path in (
        (paths["backbone"], paths["cwt"]),
        (paths["backbone_orbax"], paths["cwt_orbax"]),
    ):
        reads.clear()
        read, variables, read_params, inner = predict.load_checkpoints(backbone_path, cwt_path)
        assert reads == [backbone_path, cwt_path]
        assert read == model
        assert jax.tree.all(jax.tree.map(np.array_equal, variables, backbone))
        assert jax.tree.all(jax.tree.map(np.array_equal, read_params, cwt_params))
        assert inner == {}
    torch.manual_seed(0)
    deeper = ref.PSPNet((1, 2, 1, 1), WIDTH, 2 * BOTTLENECK)
    torch.save({"state_dict": deeper.state_dict()}, tmp_path / "p.pth")
    torch.save(ref.MultiHeadAttentionOne(3, 2 * BOTTLENECK).state_dict(), tmp_path / "c.pth")
    read, _, params, _ = predict.load_checkpoints(str(tmp_path / "p.pth"), str(tmp_path / "c.pth"))
    assert (read.layers, read.width, read.bottleneck_dim) == ((1, 2, 1, 1), WIDTH, 2 * BOTTLENECK)
    assert params["w_qkvs"]["kernel"].shape == (2 * BOTTLENECK, 3 * 2 * BOTTLENECK)


# The command.


def write_png(path, image):
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return str(path)


@pytest.fixture(scope="module")
def files(val_split, tmp_path_factory):
    """A support and its class-id mask, a folder of two queries (one non-square)."""
    directory = tmp_path_factory.mktemp("images")
    support, mask = uint8_example(val_split, 0)
    (directory / "queries").mkdir()
    query = uint8_example(val_split, 1)[0]
    return {
        "support": write_png(directory / "support.png", support),
        "mask": write_png(directory / "support_mask.png", mask),
        "queries": str(directory / "queries"),
        "query_paths": [
            write_png(directory / "queries" / "a.png", query),
            write_png(directory / "queries" / "b.jpg", cv2.resize(query, (48, 80))),
        ],
    }


def command_line(weights, files, output, **overrides):
    arguments = {
        "backbone": weights[2]["backbone"],
        "cwt": weights[2]["cwt_orbax"],
        "support": f"{files['support']}:{files['mask']}",
        "query": files["queries"],
        "output": str(output),
        "class_id": CLASS,
        "image_size": SIZE,
        "inner_steps": STEPS,
        "inner_lr": LR,
        "compilation_cache_dir": "",  # none: `main` runs in this process
        **overrides,
    }
    return ["predict"] + [
        f"--{key}={value}" for key, value in arguments.items() if value is not None
    ]


def run_main(argv):
    """The command's `main` on a flag registry of its own; returns its exit message or None."""
    values = flags.FlagValues()
    command.define_flags(values)
    try:
        command.main(values(argv), values)
    except SystemExit as exit:
        return str(exit)
    return None


def test_command_writes_masks_overlays_and_predictions_json(weights, files, model, tmp_path):
    output = tmp_path / "out"
    assert run_main(command_line(weights, files, output)) is None
    assert sorted(os.listdir(output)) == [
        "a_mask.png",
        "a_overlay.png",
        "b_mask.png",
        "b_overlay.png",
        "predictions.json",
    ]
    summary = json.loads((output / "predictions.json").read_text())
    assert [entry["query"] for entry in summary["queries"]] == files["query_paths"]
    assert summary["settings"]["inner_steps"] == STEPS
    queries = [image_files.read_image(path, "--query") for path in files["query_paths"]]
    expected = list(
        predict.predictions(
            model,
            weights[0],
            weights[1],
            [image_files.read_image(files["support"], "s")],
            [image_files.read_mask(files["mask"], "m")],
            queries,
            predict.Settings(**summary["settings"]),
        )
    )
    for entry, image, masks in zip(summary["queries"], queries, expected, strict=True):
        written = cv2.imread(str(output / entry["mask"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(written, masks["cwt"] * 255)
        overlay = cv2.imread(str(output / entry["overlay"]))
        assert overlay.shape == image.shape
        assert (entry["height"], entry["width"]) == image.shape[:2]
        assert entry["foreground_fraction"] == pytest.approx(masks["cwt"].mean())
        agree = np.mean(masks["cwt"] == masks["support_only"])
        assert entry["agreement"] == pytest.approx(agree)
        assert 0 <= entry["iou_with_support_only"] <= 1


@pytest.mark.parametrize("objective", ["repri", "transductive"])
def test_command_takes_the_inner_objective(weights, files, model, tmp_path, objective):
    """--inner_objective=repri needs no --cwt and writes RePRI's masks; transductive
    writes the CWT's and compares them with the classifier it adapts."""
    output = tmp_path / "out"
    cwt_path = None if objective == "repri" else weights[2]["cwt_orbax"]
    argv = command_line(weights, files, output, inner_objective=objective, cwt=cwt_path)
    assert run_main(argv) is None
    summary = json.loads((output / "predictions.json").read_text())
    assert summary["settings"]["inner_objective"] == objective
    official = json.loads(json.dumps(common.base().inner.repri.to_dict()))
    assert summary["settings"]["repri"] == official
    queries = [image_files.read_image(path, "--query") for path in files["query_paths"]]
    expected = list(
        predict.predictions(
            model,
            weights[0],
            weights[1],
            [image_files.read_image(files["support"], "s")],
            [image_files.read_mask(files["mask"], "m")],
            queries,
            predict.Settings(**summary["settings"]),
        )
    )
    written = "repri" if objective == "repri" else "cwt"
    for entry, masks in zip(summary["queries"], expected, strict=True):
        assert entry["method"] == written
        mask = cv2.imread(str(output / entry["mask"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, masks[written] * 255)
        if objective == "transductive":
            assert 0 <= entry["iou_with_transductive"] <= 1


def error_cases(weights, files, root):
    """{case: (flag overrides, texts of the one-line message)} of inputs that stop the command."""
    (root / "empty").mkdir()
    (root / "text.png").write_text("not an image")
    support = image_files.read_image(files["support"], "s")
    small_mask = write_png(root / "small_mask.png", np.ones((10, 10), np.uint8))
    background = write_png(root / "background.png", np.zeros(support.shape[:2], np.uint8))
    wrong_cwt = root / "cwt8"
    checkpoints.save_tree(str(wrong_cwt), {"params": cwt.init(jax.random.key(0), 8, HEADS)})
    learned_cwt = root / "learned"
    checkpoints.save_tree(str(learned_cwt), learned_checkpoint(weights[1]))
    return {
        "unreadable_query": (
            {"query": str(root / "text.png")},
            ["--query=", "text.png is not a JPEG or PNG file"],
        ),
        "unreadable_support": (
            {"support": f"{root / 'text.png'}:{files['mask']}"},
            ["text.png is not a JPEG or PNG file"],
        ),
        "mask_size": (
            {"support": f"{files['support']}:{small_mask}"},
            ["small_mask.png", "the mask is 10x10 but the image is 64x64"],
        ),
        "no_foreground": (
            {"support": f"{files['support']}:{background}", "class_id": None},
            ["background.png", "no pixel of value 1..254"],
        ),
        "no_class_pixel": ({"class_id": 20}, ["support_mask.png", "no pixel of class 20"]),
        "backbone_architecture": (
            {"backbone": weights[2]["cwt_orbax"]},
            ["--backbone=", "holds no PSPNet"],
        ),
        "backbone_not_a_checkpoint": (
            {"backbone": str(root / "empty")},
            ["--backbone=", "empty is not an orbax checkpoint", "pretrain/best"],
        ),
        "cwt_architecture": (
            {"cwt": str(wrong_cwt)},
            ["--cwt=", "adapts 8-channel classifiers", f"gives {BOTTLENECK}-channel features"],
        ),
        "empty_folder": (
            {"query": str(root / "empty")},
            ["--query=", "holds no .jpg, .jpeg or .png"],
        ),
        "missing_checkpoint": (
            {"cwt": str(root / "none.pth")},
            ["--cwt=", "none.pth does not exist"],
        ),
        "optimizer": ({"inner_optimizer": "adamx"}, ["'adamx' is not an optax optimiser"]),
        "learned_init_unused": (
            {"cwt": str(learned_cwt)},
            ["--cwt=", "holds a meta-learned classifier initialisation", "--inner_init=learned"],
        ),
        "learned_init_missing": (
            {"inner_init": "learned"},
            ["--cwt=", "holds no meta-learned classifier initialisation", "--inner_init=torch"],
        ),
        "repri_with_cwt": (
            {"inner_objective": "repri"},
            ["--inner_objective=repri", "--cwt=", "would go unused; leave --cwt out"],
        ),
        "repri_with_learned_init": (
            {"inner_objective": "repri", "cwt": None, "inner_init": "learned"},
            ["--inner_init=learned would go unused"],
        ),
        "no_cwt": (
            {"inner_objective": "transductive", "cwt": None},
            ["--inner_objective=transductive", "give the CWT with --cwt"],
        ),
    }


CASES = [
    "unreadable_query",
    "unreadable_support",
    "mask_size",
    "no_foreground",
    "no_class_pixel",
    "backbone_architecture",
    "backbone_not_a_checkpoint",
    "cwt_architecture",
    "empty_folder",
    "missing_checkpoint",
    "optimizer",
    "learned_init_unused",
    "learned_init_missing",
    "repri_with_cwt",
    "repri_with_learned_init",
    "no_cwt",
]


CHECKPOINT_CASES = (
    "backbone_architecture",
    "backbone_not_a_checkpoint",
    "cwt_architecture",
    "missing_checkpoint",
    "learned_init_unused",
    "learned_init_missing",
)


def learned_checkpoint(cwt_params):
    """A CWT meta-trained with `inner.init=learned` and `inner.learn_lr`, as saved."""
    rng = np.random.RandomState(0)
    inner = {"init": rng.randn(2, BOTTLENECK) / 4, "log_lr": rng.randn(2, BOTTLENECK) / 2}
    return {"params": cwt_params, "inner": jax.tree.map(np.float32, inner)}


def test_command_uses_a_meta_learned_inner_loop(weights, files, model, tmp_path, reads):
    """A CWT checkpoint with a learned initialisation and learning rates: with
    --inner_init=learned the command segments as `predictions` given them does, having
    read each checkpoint once."""
    path = str(tmp_path / "learned")
    checkpoint = learned_checkpoint(weights[1])
    checkpoints.save_tree(path, checkpoint)
    output = tmp_path / "out"
    assert run_main(command_line(weights, files, output, cwt=path, inner_init="learned")) is None
    assert reads == [weights[2]["backbone"], path]
    query = image_files.read_image(files["query_paths"][0], "q")
    support = (
        [image_files.read_image(files["support"], "s")],
        [image_files.read_mask(files["mask"], "m")],
    )
    settings = settings_of(class_id=CLASS, inner_init="learned")
    (expected,) = predict.predictions(
        model, weights[0], weights[1], *support, [query], settings, inner_params=checkpoint["inner"]
    )
    written = cv2.imread(str(output / "a_mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, expected["cwt"] * 255)
    (random_init,) = predict.predictions(
        model,
        weights[0],
        weights[1],
        *support,
        [query],
        dataclasses.replace(settings, inner_init="torch"),
    )
    assert not np.array_equal(random_init["support_only"], expected["support_only"])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_the_command_with_one_line_before_any_work(weights, files, tmp_path, case):
    overrides, expected = error_cases(weights, files, tmp_path)[case]
    output = tmp_path / "out"
    with compilation.recorded() as compiled:
        message = run_main(command_line(weights, files, output, **overrides))
    if case not in CHECKPOINT_CASES:  # reading a checkpoint may compile jax.random.key
        assert not compiled.durations  # no model ran
    assert message is not None and message.startswith("error: ")
    assert "\n" not in message
    for text in expected:
        assert text in message
    assert not output.exists()


@pytest.mark.parametrize("case", ["empty_folder", "flag", "backbone_not_a_checkpoint"])
def test_command_line_exits_non_zero_with_one_line(weights, files, tmp_path, case):
    """No traceback, and no library warning: orbax logs some on a folder that is not a
    checkpoint."""
    (tmp_path / "empty").mkdir()
    overrides, expected = {
        "empty_folder": (
            {"query": str(tmp_path / "empty")},
            f"error: --query={tmp_path / 'empty'} holds no .jpg, .jpeg or .png file; give a "
            "folder of images or image files.",
        ),
        "backbone_not_a_checkpoint": (
            {"backbone": str(tmp_path / "empty")},
            f"error: --backbone={tmp_path / 'empty'} is not an orbax checkpoint; give a "
            "converted checkpoint (python -m cwt_jax.convert), a run's pretrain/best or "
            "metatrain/best, or a .pth file.",
        ),
        "flag": (
            {"class_id": 0},
            "error: flag --class_id=0: 0 is not an integer in the range [1, 254]",
        ),
    }[case]
    argv = command_line(weights, files, tmp_path / "out", **overrides)
    process = subprocess.run(
        [sys.executable, "-m", "cwt_jax.predict", *argv[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1
    assert process.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "out").exists()


def test_a_second_run_reads_every_program_from_the_compilation_cache(weights, files, tmp_path):
    """`--compilation_cache_dir`: the first run fills it, the same run again adds nothing."""
    cache = tmp_path / "xla"
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    entries = []
    for run in ("cold", "warm"):
        argv = command_line(
            weights,
            files,
            tmp_path / run,
            backbone=weights[2]["backbone_orbax"],  # no PyTorch to import
            compilation_cache_dir=cache,
        )
        process = subprocess.run(
            [sys.executable, "-m", "cwt_jax.predict", *argv[1:]],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert process.returncode == 0, process.stderr[-3000:]
        entries.append(sorted(os.listdir(cache)))
    assert entries[0] and entries[1] == entries[0]
