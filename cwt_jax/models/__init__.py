"""Model code: the dilated ResNet backbone and the PSPNet feature extractor."""

from cwt_jax.models.pspnet import PSPNet, extract_features, inference_compiler_options

__all__ = ["PSPNet", "extract_features", "inference_compiler_options"]
