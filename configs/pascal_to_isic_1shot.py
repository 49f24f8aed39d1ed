"""Cross-domain: trained on all 20 PASCAL classes, evaluated 1-shot on ISIC2018.

Train (stages 1 and 2, model selection on FSS-1000's val classes) and evaluate:

  python -m cwt_jax.main --config=configs/pascal_to_isic_1shot.py --workdir=runs/pascal2isic_1s \
      --config.data.root=VOCdevkit/VOC2012 --config.init.resnet=resnet50_v2.pth \
      --config.data.val_root=CDFSL/FSS-1000 --config.data.test_root=CDFSL/ISIC

Evaluate converted PyTorch checkpoints only (PASCAL is not read):

  python -m cwt_jax.main --config=configs/pascal_to_isic_1shot.py --workdir=runs/pascal2isic_1s \
      --config.mode=eval \
      --config.data.test_root=CDFSL/ISIC \
      --config.init.backbone=pspnet_pascal_all.pth --config.init.cwt=cwt_pascal_all.pth

PATNet's protocol: 400 x 400 squashed images, nearest-resized masks,
600 episodes a run,
class = episode mod classes, mIoU over the classes. Published (PATNet, ECCV 2022, Table 1, and later methods): see README.
"""

from configs import common


def get_config():
    return common.cross_domain("isic", shot=1)
