"""COCO-20i, fold 2, 1-shot, ResNet-50.

  python -m cwt_jax.main --config=configs/coco_fold2_1shot.py --workdir=runs/coco_f2_1s \
      --config.data.root=coco --config.init.resnet=resnet50_v2.pth

Paper (Lu et al., ICCV 2021, Table 2, ResNet-101): mean mIoU over the 4 folds 32.9 (1-shot),
41.3 (5-shot). Use --config.data.split_convention=interleaved for the other COCO-20i split.
"""

from configs import common


def get_config():
    return common.coco(fold=2, shot=1)
