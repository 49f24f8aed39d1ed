"""The cross-domain datasets on miniature trees in their real layouts: PATNet's episode
rules, the squash resize against Pillow and PyTorch, episode files, bad inputs, and an
evaluation end to end per dataset on .pth checkpoints."""

import importlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import cv2
import data_fixtures
import numpy as np
import pytest
import torch
import torch_reference as ref
from absl import flags as absl_flags
from ml_collections import config_flags
from PIL import Image

from cwt_jax import cli, config_checks, data, errors, experiment
from cwt_jax.data import codec, cross_domain, input_pipeline, transforms
from cwt_jax.training import metatrain

REPO = pathlib.Path(__file__).resolve().parents[1]

SIZE = (20, 26)  # (height, width) of every miniature image
LAYERS, WIDTH, BOTTLENECK, HEADS = (1, 1, 1, 1), 8, 16, 2


def write_pair(image_path, mask_path, seed, grey_mask=True):
    """A random JPEG (or PNG) image and a 0/255 mask (grey, or RGB) of SIZE."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(image_path), exist_ok=True)
    os.makedirs(os.path.dirname(mask_path), exist_ok=True)
    cv2.imwrite(image_path, rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    mask = np.zeros(SIZE, np.uint8)
    mask[2 : 4 + seed % 9, 3 : 12 + seed % 7] = 255
    cv2.imwrite(mask_path, mask if grey_mask else np.stack([mask] * 3, -1))


def make_tree(root, dataset, images_per_class=3):
    """A miniature tree of `dataset` in its layout; returns the class list files (fss1000)."""
    root = str(root)
    if dataset == "deepglobe":
        for c in range(1, 7):
            for i in range(images_per_class):
                base = os.path.join(root, str(c), "test")
                write_pair(f"{base}/origin/{c}0{i}.jpg", f"{base}/groundtruth/{c}0{i}.png", i + c)
    elif dataset == "isic":
        for c in range(1, 4):
            for i in range(images_per_class):
                name = f"ISIC_{c:03d}{i:04d}"
                write_pair(
                    f"{root}/ISIC2018_Task1-2_Training_Input/{c}/{name}.jpg",
                    f"{root}/ISIC2018_Task1_Training_GroundTruth/{name}_segmentation.png",
                    i + 3 * c,
                )
    elif dataset == "chest_xray":
        for i in range(images_per_class + 1):
            write_pair(f"{root}/CXR_png/CHNCXR_{i:04d}_0.png", f"{root}/masks/x.png", i)
            os.replace(f"{root}/masks/x.png", f"{root}/masks/CHNCXR_{i:04d}_0_mask.png")
        # An image without a mask, as in the real release: not part of the dataset.
        write_pair(f"{root}/CXR_png/MCUCXR_0001_0.png", f"{root}/unused/m.png", 99)
    else:  # fss1000 and folder: <root>/<class>/<n>.jpg, <n>.png
        classes = {"train": ["bus", "cat"], "val": ["dog", "eel"], "test": ["fox", "gnu"]}
        for names in classes.values():
            for c, name in enumerate(names):
                for i in range(1, images_per_class + 1):
                    write_pair(
                        f"{root}/{name}/{i}.jpg", f"{root}/{name}/{i}.png", i + c, grey_mask=c
                    )
        lists = {}
        for split, names in classes.items():
            lists[split] = os.path.join(root, f"{split}.txt")
            with open(lists[split], "w") as f:
                f.write("".join(n + "\n" for n in reversed(names)))
        return lists
    return None


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A prepared miniature dataset of each layout: {dataset: (root, dataset dir)}."""
    prepared = {}
    for dataset in ("fss1000", "deepglobe", "isic", "chest_xray"):
        root = tmp_path_factory.mktemp(dataset)
        lists = make_tree(root, dataset)
        dataset_dir = data.prepare_cross_domain(
            dataset, str(root), str(tmp_path_factory.mktemp("tfds")), lists
        )
        prepared[dataset] = (str(root), dataset_dir)
    return prepared


def test_fss1000_lists_ship_in_the_package_with_hsnets_split_sizes():
    names = {}
    for split, path in cross_domain.FSS1000_LISTS.items():
        with open(path) as f:
            names[split] = [line.strip() for line in f if line.strip()]
    assert {s: len(n) for s, n in names.items()} == {"train": 520, "val": 240, "test": 240}
    assert len(set(names["train"]) | set(names["val"]) | set(names["test"])) == 1000
    assert "bus" in names["test"] and "fountain" in names["train"]


def test_squash_resizes_as_torchvision_on_a_pil_image_and_masks_as_torch_nearest():
    rng = np.random.default_rng(0)
    shapes = ((37, 53, 24), (20, 26, 64), (400, 300, 400), (500, 375, 400), (31, 17, 17))
    for height, width, size in shapes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = rng.choice(np.array([0, 1, 255], np.uint8), (height, width))  # PASCAL keeps 255
        ours, our_mask = transforms.squash(image.astype(np.float32), mask, size)
        # torchvision's Resize((S, S)) on a PIL image is PIL's resize((S, S), BILINEAR).
        pillow = Image.fromarray(image).resize((size, size), Image.BILINEAR)
        np.testing.assert_array_equal(ours, np.asarray(pillow, np.float32))
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(mask)[None, None].float(), (size, size), mode="nearest"
        )[0, 0].numpy()
        np.testing.assert_array_equal(our_mask, expected.astype(np.uint8))
    # data.resize=squash: that resize, then ImageNet normalisation; int32 masks, 255 kept.
    image_out, mask_out = transforms.eval_transform(
        image.astype(np.float32), mask, size, resize="squash"
    )
    np.testing.assert_array_equal(image_out, transforms.normalize(ours))
    np.testing.assert_array_equal(mask_out, expected.astype(np.int32))


def test_images_decode_as_pillow_decodes_them_for_patnets_resize():
    """PATNet resizes the image Pillow decoded: the JPEGs read here are the same pixels."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8), (5, 5), 2)
    for quality in (75, 95):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        pillow = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        np.testing.assert_array_equal(codec.decode_image(buffer.getvalue(), "x.jpg"), pillow)


def test_binary_masks_are_foreground_from_grey_128_in_any_mode():
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    for array in (grey, np.stack([grey] * 3, -1)):
        ok, encoded = cv2.imencode(".png", array)
        assert codec.decode_binary_mask(encoded.tobytes(), "m").tolist() == [[0, 0, 1, 1]]


def test_layouts_give_relative_ids_and_classes_in_order(trees):
    isic = data.open_split(trees["isic"][1], "test")
    assert isic.ids[0] == "ISIC2018_Task1-2_Training_Input/1/ISIC_0010000.jpg"
    assert isic.class_names == ("nevus", "seborrheic_keratosis", "melanoma")
    assert isic.labels == (1,) * 3 + (2,) * 3 + (3,) * 3
    fss = {s: data.open_split(trees["fss1000"][1], s) for s in ("train", "val", "test")}
    assert fss["test"].class_names == ("fox", "gnu")  # sorted, whatever the list's order
    assert fss["test"].ids[:4] == ("fox/1.jpg", "fox/2.jpg", "fox/3.jpg", "gnu/1.jpg")
    chest = data.open_split(trees["chest_xray"][1], "test")
    assert chest.ids == tuple(f"CXR_png/CHNCXR_{i:04d}_0.png" for i in range(4))
    image, mask = chest.load(0)
    assert image.shape == (*SIZE, 3) and set(np.unique(mask)) == {0, 1}
    deepglobe = data.open_split(trees["deepglobe"][1], "test")
    assert deepglobe.ids[0] == "1/test/origin/100.jpg" and len(deepglobe) == 18


@pytest.mark.parametrize("dataset", ["deepglobe", "isic", "chest_xray"])
def test_class_of_episode_i_is_i_mod_classes_as_patnet(trees, dataset):
    split = data.open_split(trees[dataset][1], "test")
    classes = split.class_ids
    specs = data.sample_episode_list(split, classes, shot=2, num_episodes=24, seed=0)
    queries = set()
    for index, spec in enumerate(specs):
        assert spec["class_id"] == classes[index % len(classes)]
        images = [spec["query_id"], *spec["support_ids"]]
        assert len(set(images)) == 3
        assert all(split.labels[split.index_of[i]] == spec["class_id"] for i in images)
        queries.add(spec["query_id"])
    assert len(queries) > len(classes)  # queries drawn at random, not one per class
    assert specs == data.sample_episode_list(split, classes, shot=2, num_episodes=24, seed=0)


def test_fss1000_runs_each_test_image_once_as_a_query(trees):
    split = data.open_split(trees["fss1000"][1], "test")
    specs = data.sample_episode_list(split, (1, 2), shot=2, num_episodes=len(split), seed=0)
    assert [s["query_id"] for s in specs] == list(split.ids)
    for spec in specs:
        assert spec["query_id"] not in spec["support_ids"]
        assert {i.split("/")[0] for i in spec["support_ids"]} == {spec["query_id"].split("/")[0]}
        assert spec["class_id"] == split.class_names.index(spec["query_id"].split("/")[0]) + 1


def test_episode_files_name_images_by_relative_path_and_replay(trees, tmp_path):
    split = data.open_split(trees["isic"][1], "test")
    specs = data.sample_episode_list(split, (1, 2, 3), shot=1, num_episodes=6, seed=3)
    path = str(tmp_path / "episodes.json")
    data.write_episode_list(path, specs)
    with open(path) as f:
        written = json.load(f)
    assert written[1]["query_id"].startswith("ISIC2018_Task1-2_Training_Input/2/")
    assert written[1]["class_id"] == 2
    replayed = data.episodes_from_list(
        split, data.read_episode_list(path), image_size=16, resize="squash"
    )
    sampled = data.eval_episodes(
        split, (1, 2, 3), shot=1, image_size=16, num_episodes=6, seed=3, resize="squash"
    )
    for index in range(6):
        for key in ("query_image", "query_mask", "support_masks"):
            np.testing.assert_array_equal(replayed[index][key], sampled[index][key])
    assert set(np.unique(replayed[0]["query_mask"])) <= {0, 1}  # nothing ignored
    data.check_episode_list(split, written, (1, 2, 3), path)
    written[0]["support_ids"] = [split.ids[-1]]  # an image of class 3 in a class-1 episode
    with pytest.raises(errors.DataError, match="is an image of class 3"):
        data.check_episode_list(split, written, (1, 2, 3), path)


@pytest.mark.parametrize(
    "dataset, damage, message",
    [
        ("isic", "rm -r {root}/ISIC2018_Task1_Training_GroundTruth", "has no folder"),
        ("deepglobe", "rm {root}/3/test/groundtruth/301.png", "has no mask"),
        ("chest_xray", "rm {root}/CXR_png/CHNCXR_0002_0.png", "has no image"),
        ("fss1000", "rm -r {root}/eel", "Class 'eel' has no images"),
        ("isic", "rm {root}/ISIC2018_Task1-2_Training_Input/2/*.jpg", "holds no .jpg"),
    ],
)
def test_bad_layouts_are_named_before_any_work(tmp_path, dataset, damage, message):
    root = tmp_path / "root"
    lists = make_tree(root, dataset)
    os.system(damage.format(root=root))
    with pytest.raises(errors.DataError, match=message):
        data.prepare_cross_domain(dataset, str(root), str(tmp_path / "tfds"), lists)
    assert not (tmp_path / "tfds").exists()


def test_an_image_and_mask_of_different_sizes_are_named(tmp_path):
    make_tree(tmp_path / "root", "chest_xray")
    mask = tmp_path / "root" / "masks" / "CHNCXR_0001_0_mask.png"
    cv2.imwrite(str(mask), np.zeros((5, 5), np.uint8))
    with pytest.raises(errors.DataError, match=r"is 26x20 but its mask .*_mask.png is 5x5"):
        data.prepare_cross_domain("chest_xray", str(tmp_path / "root"), str(tmp_path / "tfds"))


def test_a_missing_root_or_a_folder_without_classes_is_named(tmp_path):
    with pytest.raises(errors.DataError, match=r"fss1000 data root .*/nowhere does not exist"):
        data.prepare_cross_domain("fss1000", str(tmp_path / "nowhere"), str(tmp_path / "tfds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.DataError, match="holds no class folder"):
        data.prepare_cross_domain("folder", str(tmp_path / "empty"), str(tmp_path / "tfds"))
    with pytest.raises(errors.DataError, match="Class list file no.txt does not exist"):
        data.prepare_cross_domain(
            "folder", str(tmp_path / "empty"), str(tmp_path / "tfds"), {"test": "no.txt"}
        )


def test_a_class_with_too_few_images_names_its_folder(trees, torch_weights, tmp_path):
    split = data.open_split(trees["deepglobe"][1], "test")
    with pytest.raises(errors.DataError, match=r"3 images in .*/1/test/origin, fewer than"):
        data.sample_episode_list(split, (1,), shot=3, num_episodes=2, seed=0)
    # A run stops before any work, leaving nothing behind.
    config = importlib.import_module("configs.pascal_to_deepglobe_5shot").get_config()
    config = tiny(
        config,
        {
            "mode": "eval",
            "data.test_root": trees["deepglobe"][0],
            "init.backbone": torch_weights["backbone"],
            "init.cwt": torch_weights["cwt"],
        },
    )
    with pytest.raises(errors.DataError, match=r"3 images in .*/1/test/origin, fewer than"):
        experiment.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory):
    """.pth files of a tiny PSPNet and CWT."""
    directory = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    pspnet = ref.PSPNet(LAYERS, WIDTH, BOTTLENECK)
    paths = {name: str(directory / f"{name}.pth") for name in ("backbone", "cwt")}
    torch.save({"state_dict": pspnet.state_dict()}, paths["backbone"])
    torch.save(ref.MultiHeadAttentionOne(HEADS, BOTTLENECK).state_dict(), paths["cwt"])
    return paths


def tiny(config, overrides):
    for dotted, value in {
        "model.layers": LAYERS,
        "model.width": WIDTH,
        "model.bottleneck_dim": BOTTLENECK,
        "cwt.heads": HEADS,
        "data.image_size": 24,
        "data.num_workers": 0,
        "inner.steps": 3,
        "eval.num_runs": 1,
        "eval.num_episodes": 6,
        "eval.episodes_per_step": 2,
        "compilation_cache_dir": "",
        **overrides,
    }.items():
        *sections, key = dotted.split(".")
        section = config
        for name in sections:
            section = section[name]
        section[key] = value
    return config


@pytest.mark.parametrize("dataset", ["fss1000", "deepglobe", "isic", "chest_xray"])
def test_pascal_to_dataset_evaluates_pth_checkpoints_end_to_end(
    trees, torch_weights, tmp_path, dataset
):
    config = importlib.import_module(f"configs.pascal_to_{dataset}_1shot").get_config()
    config = tiny(
        config,
        {
            "mode": "eval",
            "data.test_root": trees[dataset][0],
            "data.cache_dir": str(tmp_path / "tfds"),
            "init.backbone": torch_weights["backbone"],
            "init.cwt": torch_weights["cwt"],
            "eval.visualize": 1,
        },
    )
    if dataset == "fss1000":  # the miniature tree's own class lists
        config.data.test_list = os.path.join(trees[dataset][0], "test.txt")
    experiment.run(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    split = data.open_split(trees[dataset][1], "test")
    names = {str(c): name for c, name in enumerate(split.class_names, start=1)}
    assert results["class_names"] == names and set(results["per_class_iou"]) == set(names)
    assert results["protocol"]["test_size"] == 24 and results["episodes"] == [6]
    # PATNet's mIoU: the mean over the dataset's classes of each class's IoU.
    assert results["miou"] == pytest.approx(np.mean(list(results["per_class_iou"].values())))
    assert os.listdir(tmp_path / "run" / "visualize") == ["episode0000_class1.png"]


def test_pascal_to_dataset_evaluates_repri_with_the_objective_flag(trees, torch_weights, tmp_path):
    """RePRI's inference under PATNet's protocol: a backbone, no CWT."""
    config = importlib.import_module("configs.pascal_to_isic_1shot").get_config()
    config = tiny(
        config,
        {
            "mode": "eval",
            "inner.objective": "repri",
            "data.test_root": trees["isic"][0],
            "data.cache_dir": str(tmp_path / "tfds"),
            "init.backbone": torch_weights["backbone"],
            "eval.visualize": 1,
        },
    )
    experiment.run(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    assert "cwt" not in results and results["repri"]["miou"] == results["miou"]
    assert results["protocol"]["objectives"] == {"repri": {"optimizer": "sgd", "updates": 49}}
    assert os.listdir(tmp_path / "run" / "visualize") == ["episode0000_class1.png"]


def test_own_classes_in_a_folder_are_meta_trained_and_evaluated(torch_weights, tmp_path):
    """docs/cross_domain.md's example: train, val and test classes named on the command line."""
    root = tmp_path / "my_classes"
    make_tree(root, "folder")
    config = tiny(
        importlib.import_module("configs.folder_1shot").get_config(),
        {
            "data.root": str(root),
            "data.cache_dir": str(tmp_path / "tfds"),
            "init.backbone": torch_weights["backbone"],
            "data.folder_classes.train": ("bus", "cat"),
            "data.folder_classes.val": ("dog", "eel"),
            "data.folder_classes.test": ("fox", "gnu"),
            "metatrain.epochs": 1,
            "metatrain.episodes_per_epoch": 2,
            "metatrain.episodes_per_step": 2,
            "metatrain.val_episodes": 2,
            "metatrain.checkpoint_every": 1,
        },
    )
    inputs = input_pipeline.prepare(config.data, 0, str(tmp_path))
    assert inputs.train.class_names == ("bus", "cat") and inputs.test_classes == (1, 2)
    train_split, val_split, specs = metatrain.validation_episodes(config, inputs)
    assert val_split.class_names == ("dog", "eel") and len(specs) == 2
    assert all(s["query_id"].split("/")[0] in ("dog", "eel") for s in specs)
    experiment.run(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    assert results["class_names"] == {"1": "fox", "2": "gnu"}
    assert os.path.isdir(tmp_path / "run" / "metatrain" / "best")
    # Without class lists, every class folder is a test class.
    config.mode, config.init.cwt = "eval", str(tmp_path / "run" / "metatrain" / "best")
    config.eval.num_episodes = 18  # each of the 6 x 3 images once as a query
    for split in ("train", "val", "test"):
        config.data.folder_classes[split] = ()
    experiment.run(config, str(tmp_path / "every_class"))
    with open(tmp_path / "every_class" / "results.json") as f:
        names = json.load(f)["class_names"]
    assert list(names.values()) == ["bus", "cat", "dog", "eel", "fox", "gnu"]


def test_a_folder_run_that_trains_needs_train_classes(torch_weights, tmp_path):
    make_tree(tmp_path / "root", "folder")
    config = tiny(
        importlib.import_module("configs.folder_1shot").get_config(),
        {
            "data.root": str(tmp_path / "root"),
            "data.folder_classes.test": ("fox",),
            "init.backbone": torch_weights["backbone"],
        },
    )
    with pytest.raises(errors.DataError, match="names no train classes in .*root to train on"):
        experiment.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_pascal_with_every_class_base_selects_on_fss1000_val(torch_weights, tmp_path):
    """data.fold=all: meta-training on the 20 PASCAL classes, model selection on FSS-1000's
    240 val classes (data.val_root), evaluation on ISIC."""
    voc, fss, isic = tmp_path / "voc", tmp_path / "fss", tmp_path / "isic"
    data_fixtures.make_pascal_tree(str(voc))
    with open(cross_domain.FSS1000_LISTS["val"]) as f:
        val_classes = [line.strip() for line in f if line.strip()]
    for c, name in enumerate(val_classes):
        for i in (1, 2):
            write_pair(f"{fss}/{name}/{i}.jpg", f"{fss}/{name}/{i}.png", c + i)
    make_tree(isic, "isic")
    config = tiny(
        importlib.import_module("configs.pascal_to_isic_1shot").get_config(),
        {
            "data.root": str(voc),
            "data.train_list": str(voc / "lists" / "train.txt"),
            "data.val_list": str(voc / "lists" / "val.txt"),
            "data.val_root": str(fss),
            "data.test_root": str(isic),
            "data.cache_dir": str(tmp_path / "tfds"),
            "init.backbone": torch_weights["backbone"],
            "metatrain.epochs": 1,
            "metatrain.episodes_per_epoch": 2,
            "metatrain.episodes_per_step": 2,
            "metatrain.val_episodes": 4,
            "metatrain.checkpoint_every": 1,
        },
    )
    assert config.data.fold == "all"
    inputs = input_pipeline.prepare(config.data, 0, str(tmp_path))
    assert inputs.classes.base == tuple(range(1, 21)) and inputs.classes.novel == ()
    assert inputs.train.dataset == "pascal" and inputs.val.dataset == "isic"
    # Stage 1 (21 outputs: the 20 base classes and background) validates on PASCAL's val.
    assert (inputs.base_val.dataset, inputs.base_val.name) == ("pascal", "val")
    train_split, val_split, specs = metatrain.validation_episodes(config, inputs)
    assert (train_split.dataset, val_split.dataset, val_split.name) == ("pascal", "fss1000", "val")
    assert len(val_split.class_names) == 240
    assert all(val_classes.index(s["query_id"].split("/")[0]) >= 0 for s in specs)
    experiment.run(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "results.json") as f:
        names = json.load(f)["class_names"]
    assert names == {"1": "nevus", "2": "seborrheic_keratosis", "3": "melanoma"}


def test_fold_all_is_taken_from_the_command_line(monkeypatch):
    values = absl_flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    for fold, expected in (("all", "all"), ("2", 2)):
        argv = ["main", "--config=configs/pascal_to_isic_1shot.py", f"--config.data.fold={fold}"]
        monkeypatch.setattr(sys, "argv", argv)
        cli.parse_flags(argv, values)
        assert holder.value.data.fold == expected
    assert data.class_split("pascal", "all").novel == ()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.resize": "crop"}, "data.resize='crop' is not one of padded, squash"),
        ({"eval.label_resolution": "both"}, "needs data.resize=padded"),
        ({"data.fold": 4}, "data.fold=4 is not one of 0, 1, 2, 3, all"),
        ({"data.dataset": "fss1000", "mode": "all"}, "pass init.backbone"),
        ({"data.folder_classes.test": ("a",)}, "is for data.dataset=folder"),
        ({"mode": "metatrain", "data.val_root": ""}, "set data.val_root"),
        ({"data.test_dataset": ""}, "data.fold=all holds out no class"),
        (
            {"data.test_dataset": "", "mode": "metatrain", "metatrain.val_source": "novel_val"},
            "data.fold=all holds out no class",
        ),
    ],
)
def test_bad_cross_domain_settings_are_config_errors(overrides, message):
    config = importlib.import_module("configs.pascal_to_isic_1shot").get_config()
    with config.data.ignore_type():
        config = tiny(config, overrides)
    with pytest.raises(errors.ConfigError, match=re.escape(message)):
        config_checks.validate(config)


def test_the_cross_domain_eval_command_reads_pth_checkpoints(trees, torch_weights, tmp_path):
    """The command line of the issue: converted .pth checkpoints, the test dataset only."""
    overrides = {
        "mode": "eval",
        "data.test_root": trees["isic"][0],
        "data.cache_dir": str(tmp_path / "tfds"),
        "init.backbone": torch_weights["backbone"],
        "init.cwt": torch_weights["cwt"],
        "model.layers": "1,1,1,1",
        "model.width": WIDTH,
        "model.bottleneck_dim": BOTTLENECK,
        "cwt.heads": HEADS,
        "data.image_size": 24,
        "inner.steps": 3,
        "eval.num_runs": 1,
        "eval.num_episodes": 6,
        "eval.episodes_per_step": 2,
        "compilation_cache_dir": "",
    }
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "cwt_jax.main",
            "--config=configs/pascal_to_isic_1shot.py",
            f"--workdir={tmp_path / 'run'}",
            *(f"--config.{key}={value}" for key, value in overrides.items()),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "mIoU" in process.stdout
    with open(tmp_path / "run" / "results.json") as f:
        assert json.load(f)["protocol"]["episodes_per_run"] == [6]


def test_exported_episodes_replay_as_run_0(trees, torch_weights, tmp_path):
    """mode=export_episodes writes Deepglobe's episodes by relative path; eval.episodes
    replays them with run 0's numbers."""
    config = tiny(
        importlib.import_module("configs.pascal_to_deepglobe_5shot").get_config(),
        {
            "mode": "export_episodes",
            "data.shot": 1,
            "data.test_root": trees["deepglobe"][0],
            "data.cache_dir": str(tmp_path / "tfds"),
            "init.backbone": torch_weights["backbone"],
            "init.cwt": torch_weights["cwt"],
        },
    )
    experiment.run(config, str(tmp_path / "export"))
    episodes = data.read_episode_list(str(tmp_path / "export" / "episodes.json"))
    assert [e["class_id"] for e in episodes] == [1, 2, 3, 4, 5, 6]
    assert all(e["query_id"].startswith(f"{e['class_id']}/test/origin/") for e in episodes)
    config.mode = "eval"
    experiment.run(config, str(tmp_path / "sampled"))
    config.eval.episodes = str(tmp_path / "export" / "episodes.json")
    experiment.run(config, str(tmp_path / "replayed"))
    results = {}
    for name in ("sampled", "replayed"):
        with open(tmp_path / name / "results.json") as f:
            results[name] = json.load(f)
    assert results["replayed"]["per_class_iou"] == results["sampled"]["per_class_iou"]
    assert results["replayed"]["miou"] == results["sampled"]["miou"]
