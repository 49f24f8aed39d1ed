"""Cross-domain: trained on all 20 PASCAL classes, evaluated 1-shot on Chest X-ray.

Train (stages 1 and 2 on PASCAL with data.fold=all, the model selected on FSS-1000's val
classes) and evaluate:

  python -m cwt_jax.main --config=configs/pascal_to_chest_xray_1shot.py \
      --workdir=runs/pascal_to_chest_xray_1shot \
      --config.data.root=VOCdevkit/VOC2012 --config.init.resnet=resnet50_v2.pth \
      --config.data.val_root=CDFSL/FSS-1000 --config.data.test_root=CDFSL/LungSegmentation

Evaluate converted PyTorch checkpoints only (PASCAL is not read):

  python -m cwt_jax.main --config=configs/pascal_to_chest_xray_1shot.py \
      --workdir=runs/pascal_to_chest_xray_1shot --config.mode=eval \
      --config.data.test_root=CDFSL/LungSegmentation \
      --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth

PATNet's protocol: images squashed to 400 x 400, masks resized nearest, 600 episodes a run
of the one class; mIoU over the classes.

Published 1-shot mIoU on Chest X-ray, ResNet-50 (PATNet, ECCV 2022, Table 1):
PFENet 27.22, RePRI 65.08, HSNet 51.88, PATNet 66.61;
IFA (CVPR 2024, fine-tuned on the target's supports) 74.0.
CWT's is not measured yet (docs/cross_domain.md).
"""

from configs import common


def get_config():
    return common.cross_domain("chest_xray", shot=1)
