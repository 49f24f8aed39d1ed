"""Sorts the ISIC 2018 task-1 images into PATNet's class folders 1, 2, 3.

PATNet's ISIC benchmark (Lei et al., ECCV 2022) takes the 2594 training images of the
ISIC 2018 challenge's task 1 (lesion segmentation) and groups them by diagnosis into three
classes, read from ``<root>/ISIC2018_Task1-2_Training_Input/{1,2,3}/<id>.jpg`` with masks
``<root>/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png``. The diagnoses are
those of ISIC 2017's task 3 (melanoma, nevus, seborrheic keratosis): PATNet ships them as
``data/isic/class_id.csv`` (``ID,Class`` lines). The ISIC 2018 task-3 ground truth does not
serve: its images are HAM10000's (ISIC_0024306 on), none of them a task-1 image.

The class folders are numbered as IFA's `data/preprocess_isic.py` numbers them (IFA,
CVPR 2024, is built on PATNet's code): 1 nevus, 2 seborrheic_keratosis, 3 melanoma.
PATNet itself publishes no numbering, and other ports differ (DR-Adapter's
`ISIC_Split.py`: 1 seborrheic keratosis, 2 nevus, 3 melanoma); the benchmark's mIoU, a
mean over the three classes, does not depend on it, but per-class numbers do.

``--classes_csv`` takes either PATNet's ``class_id.csv`` or ISIC 2017's task-3 ground
truth (``ISIC-2017_Training_Part3_GroundTruth.csv``, and likewise its validation and test
files: ``image_id,melanoma,seborrheic_keratosis`` with 0/1 columns; neither means nevus).
Images are hard-linked into the class folders where the file system allows, else copied;
images without a diagnosis stay where they are, and are counted.

Usage::

  python scripts/prepare_isic.py --root=data/ISIC --classes_csv=PATNet/data/isic/class_id.csv
"""

import argparse
import csv
import os
import shutil

IMAGE_DIR = "ISIC2018_Task1-2_Training_Input"
CLASSES = ("nevus", "seborrheic_keratosis", "melanoma")  # folder k + 1 holds CLASSES[k]


def read_diagnoses(path: str) -> dict[str, str]:
    """Image id -> diagnosis (one of CLASSES), from either CSV format of the docstring.

    Raises:
      SystemExit: for a missing file, an unknown header or an unknown diagnosis.
    """
    if not os.path.isfile(path):
        raise SystemExit(f"--classes_csv={path} does not exist; pass PATNet's class_id.csv.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = set(rows[0]) if rows else set()
    if header == {"ID", "Class"}:
        diagnoses = {row["ID"]: row["Class"] for row in rows}
    elif header == {"image_id", "melanoma", "seborrheic_keratosis"}:
        diagnoses = {row["image_id"]: _one_hot_diagnosis(row) for row in rows}
    else:
        raise SystemExit(
            f"{path} has columns {sorted(header)}; expected PATNet's class_id.csv (ID,Class) "
            "or ISIC 2017's task-3 ground truth (image_id,melanoma,seborrheic_keratosis)."
        )
    unknown = sorted(set(diagnoses.values()) - set(CLASSES))
    if unknown:
        raise SystemExit(f"{path} has diagnoses {unknown}; expected {', '.join(CLASSES)}.")
    return diagnoses


def _one_hot_diagnosis(row: dict) -> str:
    """ISIC 2017 task 3's diagnosis of a row: melanoma, seborrheic keratosis, else nevus."""
    if float(row["melanoma"]):
        return "melanoma"
    if float(row["seborrheic_keratosis"]):
        return "seborrheic_keratosis"
    return "nevus"


def prepare(root: str, classes_csv: str) -> tuple[dict[int, int], int]:
    """Links (or copies) each diagnosed task-1 image into its class folder.

    Args:
      root: the ISIC folder holding ISIC2018_Task1-2_Training_Input/.
      classes_csv: the diagnoses (see the module docstring).

    Returns:
      (class folder -> number of images placed, number of images without a diagnosis).

    Raises:
      SystemExit: when the image folder is missing or no image has a diagnosis.
    """
    diagnoses = read_diagnoses(classes_csv)
    image_dir = os.path.join(root, IMAGE_DIR)
    if not os.path.isdir(image_dir):
        raise SystemExit(
            f"{image_dir} does not exist; unzip ISIC2018_Task1-2_Training_Input.zip in --root."
        )
    images = sorted(name for name in os.listdir(image_dir) if name.endswith(".jpg"))
    placed = dict.fromkeys(range(1, len(CLASSES) + 1), 0)
    undiagnosed = 0
    for name in images:
        diagnosis = diagnoses.get(name[: -len(".jpg")])
        if diagnosis is None:
            undiagnosed += 1
            continue
        folder = CLASSES.index(diagnosis) + 1
        target = os.path.join(image_dir, str(folder), name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            try:
                os.link(os.path.join(image_dir, name), target)
            except OSError:
                shutil.copyfile(os.path.join(image_dir, name), target)
        placed[folder] += 1
    if not any(placed.values()):
        raise SystemExit(
            f"No image of {image_dir} has a diagnosis in {classes_csv}; are they the task-1 "
            "training images (ISIC_0000000.jpg ...)?"
        )
    return placed, undiagnosed


def main(argv=None) -> None:
    """Parses the command line and sorts the images."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help=f"ISIC folder holding {IMAGE_DIR}/")
    parser.add_argument("--classes_csv", required=True, help="PATNet's data/isic/class_id.csv")
    args = parser.parse_args(argv)
    placed, undiagnosed = prepare(args.root, args.classes_csv)
    counts = ", ".join(f"{c} {CLASSES[c - 1]}: {n}" for c, n in placed.items())
    print(f"Sorted the images of {os.path.join(args.root, IMAGE_DIR)} ({counts}); ", end="")
    print(f"{undiagnosed} without a diagnosis left out.")


if __name__ == "__main__":
    main()
