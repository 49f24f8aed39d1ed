"""Cross-domain: trained on all 20 PASCAL classes, evaluated 5-shot on FSS-1000.

Train (stages 1 and 2 on PASCAL with data.fold=all, the model selected on FSS-1000's val
classes) and evaluate:

  python -m cwt_jax.main --config=configs/pascal_to_fss1000_5shot.py \
      --workdir=runs/pascal_to_fss1000_5shot \
      --config.data.root=VOCdevkit/VOC2012 --config.init.resnet=resnet50_v2.pth \
      --config.data.val_root=CDFSL/FSS-1000 --config.data.test_root=CDFSL/FSS-1000

Evaluate converted PyTorch checkpoints only (PASCAL is not read):

  python -m cwt_jax.main --config=configs/pascal_to_fss1000_5shot.py \
      --workdir=runs/pascal_to_fss1000_5shot --config.mode=eval \
      --config.data.test_root=CDFSL/FSS-1000 \
      --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth

PATNet's protocol: images squashed to 400 x 400, masks resized nearest, each of the 2,400
test images once as a query, its supports among the other images of its class; mIoU over
the classes.

Published 5-shot mIoU on FSS-1000, ResNet-50 (PATNet, ECCV 2022, Table 1):
PFENet 70.52, RePRI 74.23, HSNet 80.99, PATNet 81.23;
IFA (CVPR 2024, fine-tuned on the target's supports) 82.4.
CWT's is not measured yet (docs/cross_domain.md).
"""

from configs import common


def get_config():
    return common.cross_domain("fss1000", shot=5)
