import json

import grain
import numpy as np
import pytest
from absl import flags

from cwt_jax.data import (
    MIN_CLASS_PIXELS,
    Augmentation,
    Split,
    base_class_dataset,
    class_split,
    episodes_from_list,
    eval_episodes,
    make_loader,
    open_split,
    read_episode_list,
    sample_episode_list,
    sample_episodes,
    train_episodes,
    write_episode_list,
)
from cwt_jax.data.episodes import binary_mask
from cwt_jax.data.transforms import eval_transform


def test_an_image_counts_for_a_class_from_2_32_32_pixels():
    assert MIN_CLASS_PIXELS == 2048
    split = Split(
        "pascal", "val", None, ("a", "b", "c"), ({1: 2048}, {1: 2047, 2: 5000}, {}), ("x", "y", "z")
    )
    assert split.eligible_images(1).tolist() == [0]
    assert split.eligible_images(2).tolist() == [1]
    assert split.eligible_images(3).tolist() == []


def test_episodes_follow_the_original_sampling(pascal_dir):
    val = open_split(pascal_dir, "val")
    novel = class_split("pascal", 0).novel
    episodes = eval_episodes(val, novel, shot=1, image_size=48, num_episodes=20, seed=0)
    for index in range(len(episodes)):
        episode = episodes[index]
        class_id = int(episode["class_id"])
        assert class_id in novel
        query, supports = str(episode["query_id"]), [str(i) for i in episode["support_ids"]]
        assert query not in supports and len(set(supports)) == len(supports) == 1
        for image_id in (query, *supports):
            # Only the big object (2250 px) is eligible, never the small one (900 px).
            assert val.class_pixels[val.index_of[image_id]].get(class_id, 0) >= MIN_CLASS_PIXELS
        image, mask = val.load(val.index_of[query])
        expected_image, expected_mask = eval_transform(image, binary_mask(mask, class_id), 48)
        np.testing.assert_array_equal(episode["query_mask"], expected_mask)
        np.testing.assert_array_equal(episode["query_image"], expected_image)
        for masks in (episode["query_mask"], episode["support_masks"]):
            assert masks.dtype == np.int32 and set(np.unique(masks)) == {0, 1, 255}
        assert episode["support_images"].shape == (1, 48, 48, 3)


def test_eval_queries_cycle_through_the_list_in_order(pascal_dir):
    val = open_split(pascal_dir, "val")
    novel = class_split("pascal", 1).novel
    queries = [i for i, c in zip(val.ids, val.class_pixels, strict=True) if set(c) & set(novel)]
    queries = [
        q
        for q in queries
        if max(val.class_pixels[val.index_of[q]].get(c, 0) for c in novel) >= 2048
    ]
    specs = sample_episodes(
        val, novel, shot=1, num_episodes=2 * len(queries) + 1, seed=0, shuffle_queries=False
    )
    assert [specs[i]["query_id"] for i in range(len(specs))] == 2 * queries + queries[:1]


def test_train_queries_are_reshuffled_each_pass(pascal_dir):
    train = open_split(pascal_dir, "train")
    base = class_split("pascal", 0).base
    specs = sample_episodes(train, base, shot=1, num_episodes=60, seed=0, shuffle_queries=True)
    first, second = ([specs[i]["query_id"] for i in range(k, k + 30)] for k in (0, 30))
    assert len(set(first)) == 30 and set(first) == set(second) and first != second


def test_same_seed_same_episodes(synthetic_dir):
    val = open_split(synthetic_dir, "val")
    novel = class_split("synthetic", 2).novel
    kwargs = {"shot": 5, "num_episodes": 40, "shuffle_queries": False}
    first = sample_episodes(val, novel, seed=3, **kwargs)
    again = sample_episodes(open_split(synthetic_dir, "val"), novel, seed=3, **kwargs)
    other = sample_episodes(val, novel, seed=4, **kwargs)
    assert [first[i] for i in range(40)] == [again[i] for i in reversed(range(40))][::-1]
    assert [first[i] for i in range(40)] != [other[i] for i in range(40)]


def test_batches_do_not_depend_on_workers_or_sharding(synthetic_dir):
    train = open_split(synthetic_dir, "train")
    episodes = train_episodes(
        train,
        class_split("synthetic", 0).base,
        shot=2,
        image_size=32,
        num_episodes=16,
        seed=5,
        augmentation=Augmentation(scale_range=(0.8, 1.2), rotation_range=(-10, 10)),
    )
    in_process = list(make_loader(episodes, batch_size=4, worker_count=0))
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags (absl.app does this)
    with_workers = list(make_loader(episodes, batch_size=4, worker_count=2))
    assert len(in_process) == len(with_workers) == 4
    for a, b in zip(in_process, with_workers, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    shards = [
        list(make_loader(episodes, batch_size=4, shard_options=grain.sharding.ShardOptions(i, 2)))
        for i in range(2)
    ]
    assert [b["query_id"].tolist() for b in shards[0] + shards[1]] == [
        b["query_id"].tolist() for b in in_process
    ]
    assert in_process[1]["query_id"].tolist() == [str(episodes[i]["query_id"]) for i in range(4, 8)]
    assert in_process[0]["support_images"].shape == (4, 2, 32, 32, 3)
    assert in_process[0]["support_ids"].shape == (4, 2) and in_process[0]["class_id"].shape == (4,)


def test_episode_lists_round_trip(synthetic_dir, tmp_path):
    val = open_split(synthetic_dir, "val")
    novel = class_split("synthetic", 1).novel
    specs = sample_episode_list(val, novel, shot=2, num_episodes=6, seed=0)
    sampled = sample_episodes(val, novel, shot=2, num_episodes=6, seed=0, shuffle_queries=False)
    assert specs == [sampled[i] for i in range(6)]
    path = str(tmp_path / "episodes.json")
    write_episode_list(path, specs)
    listed = json.load(open(path))
    assert listed[0].keys() == {"class_id", "query_id", "support_ids"}
    assert read_episode_list(path) == specs
    imported = episodes_from_list(val, read_episode_list(path), image_size=40)
    sampled = eval_episodes(val, novel, shot=2, image_size=40, num_episodes=6, seed=0)
    for i in range(6):
        for key, value in sampled[i].items():
            np.testing.assert_array_equal(imported[i][key], value)


def test_stage1_masks_map_base_classes_and_ignore_novel(pascal_dir):
    train = open_split(pascal_dir, "train")
    fold = class_split("pascal", 0)
    dataset = base_class_dataset(train, fold.base, image_size=40, seed=0, augmentation=None)
    # Images whose big object is novel (classes 1-5) are left out.
    assert len(dataset) == 40 - 10
    for index in range(len(dataset)):
        example = dataset[index]
        raw = train.class_pixels[train.index_of[str(example["id"])]]
        labels = set(np.unique(example["mask"]).tolist())
        expected = {0, 255} | {fold.base.index(c) + 1 for c in raw if c in fold.base}
        assert labels == expected
        assert example["image"].shape == (40, 40, 3) and example["mask"].dtype == np.int32
    augmented = base_class_dataset(
        train, fold.base, image_size=40, seed=0, augmentation=Augmentation(), num_epochs=2
    )
    assert len(augmented) == 60
    ids = [str(augmented[i]["id"]) for i in range(60)]
    assert set(ids[:30]) == set(ids[30:]) and ids[:30] != ids[30:]


@pytest.mark.parametrize("shot", [1, 5])
def test_synthetic_five_shot_episode_shapes(synthetic_dir, shot):
    val = open_split(synthetic_dir, "val")
    episode = eval_episodes(
        val, class_split("synthetic", 3).novel, shot=shot, image_size=64, num_episodes=1, seed=0
    )[0]
    assert episode["support_images"].shape == (shot, 64, 64, 3)
    assert episode["support_masks"].shape == (shot, 64, 64)
    assert episode["query_image"].dtype == np.float32
