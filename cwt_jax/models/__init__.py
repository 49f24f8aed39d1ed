"""Model code: the dilated ResNet, the PSPNet, the DINOv2 ViT and the CWT.

`from_config` builds the backbone of the `model` config section (`backbone`): the one
place a run's model is made. `cwt` is the Classifier Weight Transformer, `interpolate` the bilinear
resizes both share with the few-shot classifier.
"""

from cwt_jax.models.backbone import BACKBONES, check_image_size, from_config, is_frozen_encoder
from cwt_jax.models.pspnet import PSPNet, apply_backbone, backbone_jit, extract_features
from cwt_jax.models.resnet import init_variables
from cwt_jax.models.vit import DinoV2

__all__ = [
    "BACKBONES",
    "DinoV2",
    "PSPNet",
    "apply_backbone",
    "backbone_jit",
    "check_image_size",
    "extract_features",
    "from_config",
    "init_variables",
    "is_frozen_encoder",
]
