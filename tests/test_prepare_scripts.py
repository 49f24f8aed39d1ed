"""The cross-domain preparation scripts on tiny inputs in the official release formats."""

import importlib.util
import os

import cv2
import numpy as np
import pytest


def load_script(name):
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_deepglobe = load_script("prepare_deepglobe")
prepare_isic = load_script("prepare_isic")

AGRICULTURE, URBAN, WATER, UNKNOWN = (255, 255, 0), (0, 255, 255), (0, 0, 255), (0, 0, 0)
TILE = 10  # a 60 x 60 release image cuts into 6 x 6 tiles of 100 pixels


def write_rgb_png(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))


@pytest.fixture
def deepglobe_release(tmp_path):
    """One 60 x 60 image: agriculture everywhere, with patches placed per tile."""
    source = tmp_path / "train"
    source.mkdir()
    mask = np.zeros((60, 60, 3), np.uint8)
    mask[:] = AGRICULTURE
    mask[0:2, 0:3] = URBAN  # tile 00: urban covers 6 % -> kept, in classes 1 and 2
    mask[0:2, 10:12] = URBAN  # tile 01: urban covers 4 % -> dropped
    mask[10:13, 0:2] = WATER  # tile 10: water 6 % and unknown 5 % -> kept, classes 1 and 5
    mask[10:15, 2:3] = UNKNOWN
    mask[20:22, 20:23] = URBAN  # tile 22: urban 6 %, and 4 % of agriculture off by noise,
    mask[25:27, 25:27] = (250, 250, 3)  # which counts as agriculture -> kept
    mask[50:60, 50:55] = URBAN  # tile 55: half urban -> kept
    image = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(source / "104_sat.jpg"), image)
    write_rgb_png(source / "104_mask.png", mask)
    return source


def listing(root, class_id, folder):
    return sorted(os.listdir(root / str(class_id) / "test" / folder))


def test_deepglobe_tiles_filter_and_classes(deepglobe_release, tmp_path):
    source = deepglobe_release
    root = tmp_path / "Deepglobe"
    prepare_deepglobe.main(["--source", str(source), "--root", str(root)])
    # Single-colour tiles (all agriculture) and tile 01 (rarest colour 4 %) are dropped.
    kept = ["104_00", "104_10", "104_22", "104_55"]
    assert listing(root, 1, "origin") == [t + ".jpg" for t in kept]
    assert listing(root, 1, "groundtruth") == [t + ".png" for t in kept]
    assert listing(root, 2, "origin") == ["104_00.jpg", "104_22.jpg", "104_55.jpg"]
    assert listing(root, 5, "groundtruth") == ["104_10.png"]
    for class_id in (3, 4, 6):
        assert listing(root, class_id, "origin") == []
    water = cv2.imread(str(root / "5/test/groundtruth/104_10.png"), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((TILE, TILE), np.uint8)
    expected[0:3, 0:2] = 255
    np.testing.assert_array_equal(water, expected)
    agriculture = cv2.imread(str(root / "1/test/groundtruth/104_10.png"), cv2.IMREAD_UNCHANGED)
    assert (agriculture == 255).sum() == 100 - 6 - 5
    tile = cv2.imread(str(root / "2/test/origin/104_55.jpg"))
    assert tile.shape == (TILE, TILE, 3)
    decoded = cv2.imread(str(source / "104_sat.jpg"))[50:60, 50:60]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", decoded)[1], cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(tile, jpeg)  # the tile of the image, re-encoded once


def test_deepglobe_cuts_uneven_sizes_as_patnet():
    tiles = dict(prepare_deepglobe.tiles(np.zeros((15, 15)), 6))
    assert [tiles[row, 0].shape[0] for row in range(6)] == [2, 3, 2, 3, 2, 3]  # int(i * 15 / 6)


def test_deepglobe_bad_inputs(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder"):
        prepare_deepglobe.main(["--source", str(tmp_path / "nope"), "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match="holds no <id>_sat.jpg"):
        prepare_deepglobe.main(["--source", str(tmp_path), "--root", str(tmp_path / "out")])
    cv2.imwrite(str(tmp_path / "7_sat.jpg"), np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(SystemExit, match="7_mask.png does not exist"):
        prepare_deepglobe.main(["--source", str(tmp_path), "--root", str(tmp_path / "out")])


@pytest.fixture
def isic_root(tmp_path):
    image_dir = tmp_path / "ISIC" / prepare_isic.IMAGE_DIR
    image_dir.mkdir(parents=True)
    for index in range(5):
        (image_dir / f"ISIC_000000{index}.jpg").write_bytes(b"jpeg %d" % index)
    return tmp_path / "ISIC"


def test_isic_sorts_by_patnet_class_csv(isic_root, tmp_path, capsys):
    csv_path = tmp_path / "class_id.csv"
    csv_path.write_text(
        "ID,Class\nISIC_0000000,nevus\nISIC_0000001,melanoma\n"
        "ISIC_0000003,seborrheic_keratosis\nISIC_0000004,nevus\nISIC_0000009,melanoma\n"
    )
    prepare_isic.main(["--root", str(isic_root), "--classes_csv", str(csv_path)])
    image_dir = isic_root / prepare_isic.IMAGE_DIR
    assert sorted(os.listdir(image_dir / "1")) == ["ISIC_0000000.jpg", "ISIC_0000004.jpg"]
    assert sorted(os.listdir(image_dir / "2")) == ["ISIC_0000003.jpg"]
    assert sorted(os.listdir(image_dir / "3")) == ["ISIC_0000001.jpg"]
    assert (image_dir / "1" / "ISIC_0000004.jpg").read_bytes() == b"jpeg 4"
    assert "1 without a diagnosis left out" in capsys.readouterr().out
    prepare_isic.main(["--root", str(isic_root), "--classes_csv", str(csv_path)])  # rerun: same
    assert sorted(os.listdir(image_dir / "1")) == ["ISIC_0000000.jpg", "ISIC_0000004.jpg"]


def test_isic_reads_isic2017_ground_truth(isic_root, tmp_path):
    csv_path = tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv"
    csv_path.write_text(
        "image_id,melanoma,seborrheic_keratosis\n"
        "ISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n"
    )
    placed, undiagnosed = prepare_isic.prepare(str(isic_root), str(csv_path))
    assert placed == {1: 1, 2: 1, 3: 1} and undiagnosed == 2
    image_dir = isic_root / prepare_isic.IMAGE_DIR
    assert os.listdir(image_dir / "2") == ["ISIC_0000002.jpg"]  # seborrheic keratosis


def test_isic_bad_inputs(isic_root, tmp_path):
    with pytest.raises(SystemExit, match="does not exist; pass PATNet's class_id.csv"):
        prepare_isic.prepare(str(isic_root), str(tmp_path / "missing.csv"))
    task3_2018 = tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv"
    task3_2018.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0024306,0,1,0,0,0,0,0\n")
    with pytest.raises(SystemExit, match="expected PATNet's class_id.csv"):
        prepare_isic.prepare(str(isic_root), str(task3_2018))
    other = tmp_path / "other.csv"
    other.write_text("ID,Class\nISIC_0024306,nevus\n")
    with pytest.raises(SystemExit, match="No image of .* has a diagnosis"):
        prepare_isic.prepare(str(isic_root), str(other))
    with pytest.raises(SystemExit, match="ISIC2018_Task1-2_Training_Input does not exist"):
        prepare_isic.prepare(str(tmp_path), str(other))
