"""One's own classes, 1-shot: a folder in FSS-1000's layout, <root>/<class>/<name>.jpg with
<name>.png masks (foreground where grey >= 128), images squashed to 400 x 400.

Meta-train on the train classes (the model selected on the val classes) and evaluate on the
test classes, from a PSPNet trained on PASCAL or COCO:

  python -m cwt_jax.main --config=configs/folder_1shot.py --workdir=runs/my_classes \
      --config.data.root=my_classes --config.init.backbone=pspnet.pth \
      --config.data.folder_classes.train="('cat', 'dog')" \
      --config.data.folder_classes.val="('fox',)" --config.data.folder_classes.test="('gnu',)"

Or evaluate a trained CWT on every class folder of the root (no class list given: every
folder is a test class):

  python -m cwt_jax.main --config=configs/folder_1shot.py --workdir=runs/my_eval \
      --config.mode=eval --config.data.root=my_classes \
      --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth

No published numbers: these are one's own classes.
"""

from configs import common


def get_config():
    config = common.fss1000(shot=1)
    config.data.dataset = "folder"
    config.eval.num_episodes = 1000
    return config
