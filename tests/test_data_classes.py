import pytest

from cwt_jax.data import DataError, class_split, cross_dataset_classes


@pytest.mark.parametrize("fold", range(4))
def test_pascal_folds_hold_out_five_consecutive_classes(fold):
    split = class_split("pascal", fold)
    assert split.novel == tuple(range(5 * fold + 1, 5 * fold + 6))
    assert set(split.base) | set(split.novel) == set(range(1, 21))
    assert not set(split.base) & set(split.novel)
    assert split.names[1] == "aeroplane" and split.names[20] == "tvmonitor"


def test_coco_contiguous_and_interleaved_folds():
    assert class_split("coco", 1).novel == tuple(range(21, 41))
    assert class_split("coco", 0, "interleaved").novel == (
        1,
        5,
        9,
        13,
        17,
        21,
        25,
        29,
        33,
        37,
        41,
        45,
        49,
        53,
        57,
        61,
        65,
        69,
        73,
        77,
    )
    interleaved = class_split("coco", 3, "interleaved")
    assert interleaved.novel == tuple(range(4, 81, 4))
    assert len(interleaved.base) == 60
    assert interleaved.names[1] == "person" and interleaved.names[80] == "toothbrush"


def test_synthetic_mirrors_pascal_folds():
    for fold in range(4):
        assert class_split("synthetic", fold).novel == class_split("pascal", fold).novel


def test_coco_to_pascal_keeps_only_unseen_class_names():
    # RePRI's COCO->PASCAL fold 0: aeroplane, boat, chair, dining table, dog, person.
    assert cross_dataset_classes("coco", 0, "pascal", "interleaved") == (1, 4, 9, 11, 12, 15)
    # Fold 1: bicycle, bus, horse, sofa (COCO's "couch").
    assert cross_dataset_classes("coco", 1, "pascal", "interleaved") == (2, 6, 13, 18)
    # Contiguous fold 0 holds out COCO 1-20, which contain 14 PASCAL classes.
    assert cross_dataset_classes("coco", 0, "pascal") == (
        1,
        2,
        3,
        4,
        6,
        7,
        8,
        10,
        12,
        13,
        14,
        15,
        17,
        19,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("imagenet", 0), "Unknown dataset 'imagenet'"),
        (("pascal", 4), "Fold 4 of pascal"),
        (("pascal", 0, "interleaved"), "'interleaved' is not defined for pascal"),
        (("coco", 0, "blocks"), "'blocks' is not defined for coco"),
    ],
)
def test_bad_split_settings_raise(args, message):
    with pytest.raises(DataError, match=message):
        class_split(*args)
