"""Checks the tests' DINOv2 reference against the official code, on random models.

  python scripts/check_dinov2_reference.py /path/to/dinov2   # a facebookresearch/dinov2 checkout

Builds the official `DinoVisionTransformer` with the hub's settings (`init_values=1.0`,
`block_chunks=0`, `interpolate_offset=0.1`, no antialias; without xformers) and
`tests/torch_reference.DinoV2` of the same shape, loads the reference's state dict into
the official model strictly, and prints the largest difference of `x_norm_patchtokens`
(with and without registers, MLP and SwiGLU, four image sizes); it exits non-zero where
one exceeds `TOLERANCE` of the features' largest magnitude. Then, for each of the 8
hub models (built on PyTorch's meta device, no weights), checks that the converter's
names and shapes for `cwt_jax.models.vit.PRESETS[name]` are the official state dict's
(`mask_token` aside: not converted) and that the architecture read from the official
shapes is the preset. Run from the repository root.
"""

import sys
import warnings
from functools import partial

import flax
import jax
import torch

from cwt_jax.models import resnet, vit
from cwt_jax.weights import pytorch

warnings.filterwarnings("ignore")
sys.path[:0] = [sys.argv[1], "tests"]
import torch_reference as ref  # noqa: E402
from dinov2.hub import backbones  # noqa: E402
from dinov2.layers import MemEffAttention  # noqa: E402
from dinov2.layers import NestedTensorBlock as Block  # noqa: E402
from dinov2.models import vision_transformer as vits  # noqa: E402

TOLERANCE = 1e-5  # relative to the largest |feature|: float32 round-off, as the tests'
failures = []
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
        relative = difference / a.abs().max().item()
        case = f"registers={reg} ffn={ffn} size={size}"
        print(f"{case}: max |official - reference| = {difference} ({relative:.1e} relative)")
        if relative > TOLERANCE:
            failures.append(case)

for name, architecture in vit.PRESETS.items():
    with torch.device("meta"):
        official = getattr(backbones, name)(pretrained=False).state_dict()
    shapes = jax.eval_shape(
        lambda architecture=architecture: resnet.init_variables(
            vit.DinoV2(architecture), jax.random.key(0)
        )
    )
    ours = {
        pytorch._dinov2_key(path): pytorch._to_torch_shape(leaf.shape)
        for path, leaf in flax.traverse_util.flatten_dict(shapes).items()
    }
    assert set(official) - set(ours) == {"mask_token"}, set(official) ^ set(ours)
    assert all(tuple(official[key].shape) == shape for key, shape in ours.items()), name
    assert pytorch.dinov2_architecture(official, name) == architecture, name
    print(f"{name}: the converter's {len(ours)} names and shapes are the official ones")
if failures:
    sys.exit(
        f"error: the reference differs from the official DINOv2 by more than {TOLERANCE} "
        f"(relative) at {'; '.join(failures)}: fix tests/torch_reference.DinoV2."
    )
