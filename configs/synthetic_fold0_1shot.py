"""The embedded benchmark: synthetic PASCAL-5i-like data, fold 0, 1-shot, small PSPNet.

  python -m cwt_jax.main --config=configs/synthetic_fold0_1shot.py --workdir=/tmp/cwt_synthetic

Generates the data, pre-trains, meta-trains and evaluates on 2 CPU cores in under 10
minutes, printing novel-class mIoU and FB-IoU for the CWT and the support-only classifier.
"""

from configs import common


def get_config():
    return common.synthetic(fold=0, shot=1)
