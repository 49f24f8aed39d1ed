"""The embedded benchmark at 5 shots: synthetic PASCAL-5i-like data, fold 0, small PSPNet.

  python -m cwt_jax.main --config=configs/synthetic_fold0_5shot.py --workdir=/tmp/cwt_5shot

Meta-trains and evaluates with 5 supports per episode. Evaluating a CWT meta-trained
1-shot at 5 shots may score it below the support-only classifier; the run warns.
To reuse the 1-shot run's stage 1, add
--config.init.backbone=/tmp/cwt_synthetic/pretrain/best.
"""

from configs import common


def get_config():
    return common.synthetic(fold=0, shot=5)
