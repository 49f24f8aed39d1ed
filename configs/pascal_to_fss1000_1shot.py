"""Cross-domain: trained on all 20 PASCAL classes, evaluated 1-shot on FSS-1000.

Train (stages 1 and 2 on PASCAL with data.fold=all, the model selected on FSS-1000's val
classes) and evaluate:

  python -m cwt_jax.main --config=configs/pascal_to_fss1000_1shot.py \
      --workdir=runs/pascal_to_fss1000_1shot \
      --config.data.root=VOCdevkit/VOC2012 --config.init.resnet=resnet50_v2.pth \
      --config.data.val_root=CDFSL/FSS-1000 --config.data.test_root=CDFSL/FSS-1000

Evaluate converted PyTorch checkpoints only (PASCAL is not read):

  python -m cwt_jax.main --config=configs/pascal_to_fss1000_1shot.py \
      --workdir=runs/pascal_to_fss1000_1shot --config.mode=eval \
      --config.data.test_root=CDFSL/FSS-1000 \
      --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth

PATNet's protocol: images squashed to 400 x 400, masks resized nearest, each of the 2,400
test images once as a query, its supports among the other images of its class; mIoU over
the classes.

Published 1-shot mIoU on FSS-1000, ResNet-50 (PATNet, ECCV 2022, Table 1):
PFENet 70.87, RePRI 70.96, HSNet 77.53, PATNet 78.59;
IFA (CVPR 2024, fine-tuned on the target's supports) 80.1.
CWT's is not measured yet (docs/cross_domain.md).
"""

from configs import common


def get_config():
    return common.cross_domain("fss1000", shot=1)
