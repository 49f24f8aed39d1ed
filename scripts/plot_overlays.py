"""Puts the support, its mask outlined, beside the overlays `python -m cwt_jax.predict` wrote.

The picture of docs/predict.md, from the example's files:

  python scripts/plot_overlays.py --example_dir=/tmp/cwt_example \
      --out=docs/images/predict_overlays.png

reads `<example_dir>/support.png` and `support_mask.png` (written by
`scripts/write_example_images.py`; the class is `--class_id`) and
`<example_dir>/predictions/<query>_overlay.png` for each of `--queries`, and writes one
row of titled tiles.
"""

import argparse
import os

import cv2
import numpy as np

TILE = 160  # side of each tile, as the panels of eval.visualize
TITLE = 18  # height of the title strip above each tile


def outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the outline of the mask's foreground, white on black.

    Args:
      image: uint8 (H, W, 3).
      mask: (H, W) bool foreground.

    Returns:
      A uint8 (H, W, 3) copy.
    """
    shown = np.ascontiguousarray(image.copy())
    outline, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(shown, outline, -1, (0, 0, 0), 3)
    return cv2.drawContours(shown, outline, -1, (255, 255, 255), 1)


def titled(title: str, image: np.ndarray) -> np.ndarray:
    """The image resized to a TILE square under a strip with its title."""
    tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    strip = np.full((TITLE, TILE, 3), 255, np.uint8)
    cv2.putText(strip, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


def read(path: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Reads an image file (BGR, as OpenCV keeps it), naming the file if it cannot."""
    image = cv2.imread(path, flags)
    if image is None:
        raise FileNotFoundError(
            f"{path} is not a readable image; run the example's commands first."
        )
    return image


def main(argv=None) -> None:
    """Parses the command line and writes the picture."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example_dir", required=True, help="the example's folder")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--class_id", type=int, default=1, help="the support mask's class")
    parser.add_argument("--queries", default="query0,query1", help="query stems, in order")
    args = parser.parse_args(argv)
    support = read(os.path.join(args.example_dir, "support.png"))
    mask = read(os.path.join(args.example_dir, "support_mask.png"), cv2.IMREAD_UNCHANGED)
    tiles = [titled("support and its mask", outlined(support, mask == args.class_id))]
    for stem in args.queries.split(","):
        name = f"{stem}_overlay.png"
        tiles.append(titled(name, read(os.path.join(args.example_dir, "predictions", name))))
    if not cv2.imwrite(args.out, np.concatenate(tiles, axis=1), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"Could not write {args.out}.")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
