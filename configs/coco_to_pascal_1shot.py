"""Cross-dataset: meta-trained on COCO-20i fold 0, evaluated on PASCAL classes not seen.

  python -m cwt_jax.main --config=configs/coco_to_pascal_1shot.py --workdir=runs/coco2pascal \
      --config.data.root=coco --config.data.test_root=VOCdevkit/VOC2012 \
      --config.init.backbone=coco_fold0_pspnet.pth --config.init.cwt=coco_fold0_cwt.pth

Pass --config.data.fold and the matching checkpoints for the other folds; evaluation uses
the PASCAL classes whose names are not among the COCO fold's base classes.
"""

from configs import common


def get_config():
    config = common.coco(fold=0, shot=1)
    config.data.test_dataset = "pascal"
    config.data.image_size = 473
    config.mode = "eval"
    return config
