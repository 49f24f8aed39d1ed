"""Model code: the dilated ResNet backbone and the PSPNet feature extractor."""

from cwt_jax.models.pspnet import PSPNet, apply_backbone, backbone_jit, extract_features
from cwt_jax.models.resnet import init_variables

__all__ = ["PSPNet", "apply_backbone", "backbone_jit", "extract_features", "init_variables"]
