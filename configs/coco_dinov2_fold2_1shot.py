"""COCO-20i, fold 2, 1-shot, CWT on frozen DINOv2 ViT-B/14 features (no stage 1).

  python -m cwt_jax.main --config=configs/coco_dinov2_fold2_1shot.py \
      --workdir=runs/coco_dinov2_f2_1s --config.data.root=coco \
      --config.init.backbone=dinov2_vitb14_pretrain.pth

The checkpoint is the official one, downloaded from
https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth; any other
hub model with --config.model.backbone (e.g. dinov2_vitl14_reg, with its own checkpoint).
No published number: no work pairs CWT with DINOv2 features (not run here: no data, no GPU).
"""

from configs import common


def get_config():
    return common.dinov2("coco", fold=2, shot=1)
