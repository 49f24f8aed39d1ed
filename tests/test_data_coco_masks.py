import importlib.util
import json
import os

import cv2
import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "create_coco_masks.py")
spec = importlib.util.spec_from_file_location("create_coco_masks", SCRIPT)
create_coco_masks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(create_coco_masks)


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def coco_root(tmp_path):
    categories = [{"id": i, "name": f"c{i}"} for i in (1, 2, 3, 90)]  # ids have gaps, as COCO's
    crowd = {"counts": [], "size": [30, 40]}  # RLE, never drawn
    annotations = [
        # Image 1: a dog (category 90 -> class 4) over a person, with a second polygon.
        {
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [square(0, 0, 9, 9), square(30, 20, 39, 29)],
        },
        {"image_id": 1, "category_id": 90, "iscrowd": 0, "segmentation": [square(5, 5, 14, 14)]},
        {"image_id": 1, "category_id": 2, "iscrowd": 1, "segmentation": crowd},
        # Image 2 has only a crowd annotation: no mask.
        {"image_id": 2, "category_id": 3, "iscrowd": 1, "segmentation": crowd},
    ]
    os.makedirs(tmp_path / "annotations")
    for split in ("train2014", "val2014"):
        images = [
            {"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg", "height": 30, "width": 40}
            for i in (1, 2)
        ]
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return tmp_path


def test_masks_follow_repri(coco_root):
    create_coco_masks.main(["--root", str(coco_root)])
    for split in ("train", "val"):
        assert sorted(os.listdir(coco_root / split)) == [f"COCO_{split}2014_000000000001.png"]
    mask = cv2.imread(
        str(coco_root / "val" / "COCO_val2014_000000000001.png"), cv2.IMREAD_UNCHANGED
    )
    expected = np.zeros((30, 40), np.uint8)
    expected[0:10, 0:10] = 1  # the person's first polygon only
    expected[5:15, 5:15] = 4  # drawn later, on top
    np.testing.assert_array_equal(mask, expected)


def test_all_polygons_option(coco_root):
    create_coco_masks.main(["--root", str(coco_root), "--all_polygons"])
    mask = cv2.imread(
        str(coco_root / "train" / "COCO_train2014_000000000001.png"), cv2.IMREAD_UNCHANGED
    )
    assert (mask[20:30, 30:40] == 1).all()


def test_missing_annotations(tmp_path):
    with pytest.raises(SystemExit, match="instances_train2014.json does not exist"):
        create_coco_masks.main(["--root", str(tmp_path)])
