import os

import cv2
import data_fixtures
import numpy as np
import pytest

from cwt_jax.data import (
    DataError,
    check_episode_list,
    class_split,
    episodes_from_list,
    eval_episodes,
    open_split,
    prepare_coco,
    prepare_pascal,
    read_episode_list,
)


@pytest.fixture(scope="module")
def pascal_dir(tmp_path_factory):
    return data_fixtures.prepare_pascal_tree(tmp_path_factory)[3]


@pytest.fixture
def voc(tmp_path):
    root = str(tmp_path / "VOC2012")
    data_fixtures.make_pascal_tree(root, num_images=40)
    return root


def prepare(root, tmp_path, **lists):
    return prepare_pascal(root, str(tmp_path / "tfds"), **lists)


def test_missing_data_root_names_the_expected_layout(tmp_path):
    with pytest.raises(
        DataError, match=r"has no folder JPEGImages/.*SegmentationClassAug.*docs/data.md"
    ):
        prepare(str(tmp_path / "nowhere"), tmp_path)
    with pytest.raises(DataError, match=r"has no folder train2014/.*create_coco_masks"):
        prepare_coco(str(tmp_path), str(tmp_path / "tfds"))


def test_missing_list_file(voc, tmp_path):
    with pytest.raises(DataError, match=r"List file .*/missing.txt does not exist"):
        prepare(voc, tmp_path, train_list=str(tmp_path / "missing.txt"))


def test_missing_default_val_list(voc, tmp_path):
    os.remove(os.path.join(voc, "ImageSets/Segmentation/val.txt"))
    with pytest.raises(DataError, match=r"val.txt does not exist; it defines the default"):
        prepare(voc, tmp_path)


def test_list_line_that_does_not_parse(voc, tmp_path):
    bad = tmp_path / "train.txt"
    lines = open(os.path.join(voc, "lists/train.txt")).readlines()
    bad.write_text("".join(lines[:2]) + "JPEGImages/2008_000002.jpg\n")
    with pytest.raises(
        DataError, match=r"train.txt, line 3: 'JPEGImages/2008_000002.jpg' does not parse"
    ):
        prepare(voc, tmp_path, train_list=str(bad))


def test_listed_file_that_does_not_exist(voc, tmp_path):
    os.remove(os.path.join(voc, "JPEGImages/2008_000004.jpg"))
    with pytest.raises(
        DataError, match=r"2008_000004.jpg does not exist \(listed by .*train.txt\)"
    ):
        prepare(voc, tmp_path, train_list=os.path.join(voc, "lists/train.txt"))


def test_image_and_mask_sizes_must_match(voc, tmp_path):
    cv2.imwrite(
        os.path.join(voc, "SegmentationClassAug/2008_000005.png"), np.zeros((70, 96), np.uint8)
    )
    with pytest.raises(
        DataError, match=r"2008_000005.jpg is 96x72 but its mask .*2008_000005.png is 96x70"
    ):
        prepare(voc, tmp_path)


def test_truncated_image(voc, tmp_path):
    path = os.path.join(voc, "JPEGImages/2008_000006.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"2008_000006.jpg is truncated"):
        prepare(voc, tmp_path)


def test_unreadable_image(voc, tmp_path):
    open(os.path.join(voc, "JPEGImages/2008_000007.jpg"), "wb").write(b"not an image")
    with pytest.raises(DataError, match=r"2008_000007.jpg is not a JPEG or PNG file"):
        prepare(voc, tmp_path)
    open(os.path.join(voc, "JPEGImages/2008_000007.jpg"), "wb").write(b"\xff\xd8garbage\xff\xd9")
    with pytest.raises(DataError, match=r"Cannot decode image .*2008_000007.jpg"):
        prepare(voc, tmp_path)


def test_mask_values_outside_the_class_range(voc, tmp_path):
    mask = np.zeros((72, 96), np.uint8)
    mask[:10, :10] = 21
    mask[10:20, :10] = 254
    cv2.imwrite(os.path.join(voc, "SegmentationClassAug/2008_000008.png"), mask)
    with pytest.raises(
        DataError, match=r"2008_000008.png has values \[21, 254\] outside the class range 0..20"
    ):
        prepare(voc, tmp_path)


def test_colour_masks_are_refused(voc, tmp_path):
    cv2.imwrite(
        os.path.join(voc, "SegmentationClassAug/2008_000009.png"), np.zeros((72, 96, 3), np.uint8)
    )
    with pytest.raises(DataError, match=r"2008_000009.png has shape \(72, 96, 3\).*single-channel"):
        prepare(voc, tmp_path)


def test_class_with_too_few_eligible_images(pascal_dir):
    val = open_split(pascal_dir, "val")  # every class is big in exactly 2 val images
    novel = class_split("pascal", 0).novel
    eval_episodes(val, novel, shot=1, image_size=32, num_episodes=1, seed=0)
    with pytest.raises(
        DataError,
        match=r"Class 1 \(aeroplane\) has 2 images in pascal/val .* fewer than shot \+ 1 = 3",
    ):
        eval_episodes(val, novel, shot=2, image_size=32, num_episodes=1, seed=0)


def test_bad_episode_lists(pascal_dir, tmp_path):
    path = tmp_path / "episodes.json"
    with pytest.raises(DataError, match=r"episodes.json does not exist"):
        read_episode_list(str(path))
    path.write_text("[{")
    with pytest.raises(DataError, match=r"episodes.json is not valid JSON"):
        read_episode_list(str(path))
    path.write_text('[{"class_id": 1, "query_id": "2008_000020"}]')
    with pytest.raises(DataError, match=r"episodes.json, episode 0: expected a list of"):
        read_episode_list(str(path))
    val = open_split(pascal_dir, "val")
    with pytest.raises(DataError, match=r"Episode 0: image id '2008_000001' is not in pascal/val"):
        episodes_from_list(
            val, [{"class_id": 1, "query_id": "2008_000001", "support_ids": []}], image_size=32
        )
    with pytest.raises(DataError, match=r"Episode 0: class id 21 is not in 1..20"):
        episodes_from_list(
            val,
            [{"class_id": 21, "query_id": "2008_000020", "support_ids": ["2008_000021"]}],
            image_size=32,
        )


def test_episode_files_are_checked_episode_by_episode(pascal_dir):
    val = open_split(pascal_dir, "val")
    novel = class_split("pascal", 0).novel
    class_id = next(c for c in novel if len(val.eligible_images(c)) >= 2)
    eligible = set(val.eligible_images(class_id))
    query, support = (val.ids[i] for i in sorted(eligible)[:2])
    without_class = val.ids[next(i for i in range(len(val)) if i not in eligible)]
    good = {"class_id": class_id, "query_id": query, "support_ids": [support]}
    check_episode_list(val, [good], novel, "list.json")
    base_class = class_split("pascal", 0).base[0]
    cases = {
        "class": ({**good, "class_id": base_class}, f"class {base_class} .* is not among"),
        "support": (
            {**good, "support_ids": [without_class]},
            f"class .* covers 0 pixels of '{without_class}'",
        ),
        "query": (
            {**good, "query_id": without_class},
            f"class .* covers 0 pixels of '{without_class}'",
        ),
        "own": ({**good, "support_ids": [query]}, f"the query '{query}' is among its own supports"),
    }
    for bad, message in cases.values():
        with pytest.raises(DataError, match=rf"list.json, episode 1: {message}"):
            check_episode_list(val, [good, bad], novel, "list.json")
    with pytest.raises(DataError, match=r"Episode list list.json holds no episode"):
        check_episode_list(val, [], novel, "list.json")


def test_open_split_of_an_unprepared_directory(tmp_path):
    with pytest.raises(DataError, match=r"holds no prepared dataset"):
        open_split(str(tmp_path), "val")
