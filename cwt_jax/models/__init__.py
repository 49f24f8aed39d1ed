"""Model code: the dilated ResNet backbone, the PSPNet feature extractor and the CWT.

`from_config` builds the PSPNet of the `model` config section: the one place a run's
model is made. `cwt` is the Classifier Weight Transformer, `interpolate` the bilinear
resizes both share with the few-shot classifier.
"""

from cwt_jax.models.pspnet import (
    PSPNet,
    apply_backbone,
    backbone_jit,
    extract_features,
    from_config,
)
from cwt_jax.models.resnet import init_variables

__all__ = [
    "PSPNet",
    "apply_backbone",
    "backbone_jit",
    "extract_features",
    "from_config",
    "init_variables",
]
