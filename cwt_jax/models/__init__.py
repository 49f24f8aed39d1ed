"""Model code: the dilated ResNet backbone and the PSPNet feature extractor."""

from cwt_jax.models.pspnet import PSPNet, extract_features

__all__ = ["PSPNet", "extract_features"]
