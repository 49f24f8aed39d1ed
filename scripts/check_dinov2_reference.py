"""Checks the tests' DINOv2 reference against the official code, on random models.

  python scripts/check_dinov2_reference.py /path/to/dinov2   # a facebookresearch/dinov2 checkout

Builds the official `DinoVisionTransformer` with the hub's settings (`init_values=1.0`,
`block_chunks=0`, `interpolate_offset=0.1`, no antialias; without xformers) and
`tests/torch_reference.DinoV2` of the same shape, loads the reference's state dict into
the official model strictly, and prints the largest difference of `x_norm_patchtokens`
(with and without registers, MLP and SwiGLU, four image sizes). Run from the repository root.
"""

import sys
import warnings
from functools import partial

import torch

warnings.filterwarnings("ignore")
sys.path[:0] = [sys.argv[1], "tests"]
import torch_reference as ref  # noqa: E402
from dinov2.layers import MemEffAttention  # noqa: E402
from dinov2.layers import NestedTensorBlock as Block  # noqa: E402
from dinov2.models import vision_transformer as vits  # noqa: E402

for reg, ffn in [(0, "mlp"), (4, "mlp"), (0, "swiglufused"), (4, "swiglufused")]:
    torch.manual_seed(0)
    mine = ref.DinoV2(128, 2, registers=reg, swiglu=ffn != "mlp", grid=37)
    off = vits.DinoVisionTransformer(
        img_size=518,
        patch_size=14,
        embed_dim=128,
        depth=2,
        num_heads=2,
        mlp_ratio=4,
        block_fn=partial(Block, attn_class=MemEffAttention),
        init_values=1.0,
        ffn_layer=ffn,
        block_chunks=0,
        num_register_tokens=reg,
        interpolate_antialias=False,
        interpolate_offset=0.1,
    ).eval()
    sd = mine.state_dict()
    assert set(sd) == set(off.state_dict()), set(sd) ^ set(off.state_dict())
    off.load_state_dict(sd, strict=True)
    for size in [(112, 112), (98, 140), (518, 518), (476, 476)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            a = off.forward_features(x)["x_norm_patchtokens"]
            b = mine.forward_features(x)
        difference = (a - b).abs().max().item()
        print(f"registers={reg} ffn={ffn} size={size}: max |official - reference| = {difference}")
