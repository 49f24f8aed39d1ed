"""Images/s of the official DINOv2 PyTorch forward on this machine, random weights.

  python scripts/time_dinov2_pytorch.py /path/to/dinov2 [--size=476] [--batch=2] [--repeats=3]

Builds the hub model (`dinov2.hub.backbones.dinov2_vits14` and `dinov2_vitb14`,
`pretrained=False`, without xformers) and times `forward_features` in eval mode under
`torch.inference_mode()`, one warm-up first; prints one JSON line per model, with
torch's thread count. Compare with `python -m cwt_jax.benchmark --stages=eval`.
"""

import argparse
import json
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def main():
    """Times each model and prints its line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("dinov2_checkout")
    parser.add_argument("--size", type=int, default=476)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="dinov2_vits14,dinov2_vitb14")
    args = parser.parse_args()
    sys.path.insert(0, args.dinov2_checkout)
    from dinov2.hub import backbones

    images = torch.randn(args.batch, 3, args.size, args.size)
    for name in args.models.split(","):
        model = getattr(backbones, name)(pretrained=False).eval()
        with torch.inference_mode():
            model.forward_features(images)
            start = time.perf_counter()
            for _ in range(args.repeats):
                model.forward_features(images)["x_norm_patchtokens"]
            seconds = (time.perf_counter() - start) / args.repeats
        print(
            json.dumps(
                {
                    "model": name,
                    "image_size": args.size,
                    "batch": args.batch,
                    "threads": torch.get_num_threads(),
                    "images_per_s": args.batch / seconds,
                }
            )
        )


if __name__ == "__main__":
    main()
