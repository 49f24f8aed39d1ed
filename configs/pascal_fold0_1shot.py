"""PASCAL-5i, fold 0, 1-shot, ResNet-50 (the paper's setting).

  python -m cwt_jax.main --config=configs/pascal_fold0_1shot.py --workdir=runs/pascal_f0_1s \
      --config.data.root=VOCdevkit/VOC2012 --config.init.resnet=resnet50_v2.pth

Paper (Lu et al., ICCV 2021, Table 1, ResNet-50): mean mIoU over the 4 folds 56.4 (1-shot),
63.7 (5-shot); use --config.model.layers=101 for ResNet-101.
"""

from configs import common


def get_config():
    return common.pascal(fold=0, shot=1)
