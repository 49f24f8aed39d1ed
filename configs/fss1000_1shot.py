"""FSS-1000, 1-shot (HSNet's protocol): meta-trained on the 520 trn classes, the model
selected on the 240 val classes, evaluated on the 240 test classes, each test image once.

  python -m cwt_jax.main --config=configs/fss1000_1shot.py --workdir=runs/fss1000_1s \
      --config.data.root=FSS-1000 --config.init.backbone=pspnet.pth
  python -m cwt_jax.main --config=configs/fss1000_1shot.py --workdir=runs/fss1000_1s \
      --config.mode=eval --config.data.root=FSS-1000

The backbone comes from init.backbone (stage 1 does not train on binary masks).
Published 1-shot mIoU (HSNet, ICCV 2021, Table 3, ResNet-50): 85.5; CWT's is not
measured yet.
"""

from configs import common


def get_config():
    return common.fss1000(shot=1)
