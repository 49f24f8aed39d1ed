"""Shared defaults of every config: the reference setup of CWT (Lu et al., ICCV 2021).

Config files are thin: they call `base()` and override what differs. Durations are
counted in epochs (stage 1) and in episodes (stage 2); the loops convert them to steps.
"""

import ml_collections

from cwt_jax import compilation


def base() -> ml_collections.ConfigDict:
    """Returns the full config with the paper's settings for PASCAL-5i, fold 0, 1-shot."""
    config = ml_collections.ConfigDict()
    config.mode = "all"  # pretrain | metatrain | eval | all | export_episodes
    config.seed = 0
    # CPU results that do not depend on the CPU's instruction set, microarchitecture or
    # core count (compilation.DETERMINISTIC_XLA_FLAGS; slower, see docs/reproducing.md)
    config.deterministic = False
    # XLA's persistent compilation cache: a second run of the same shapes skips compiling
    # (and, on GPU, autotuning); empty disables it.
    config.compilation_cache_dir = compilation.DEFAULT_CACHE_DIR
    config.distributed = ml_collections.ConfigDict()  # several processes (hosts)
    config.distributed.enabled = False  # call jax.distributed.initialize()
    config.distributed.coordinator_address = ""  # host:port of process 0; empty: detected
    config.distributed.num_processes = 0  # 0: detected (SLURM, Open MPI, ...)
    config.distributed.process_id = -1  # -1: detected

    config.data = ml_collections.ConfigDict()
    # pascal | coco | synthetic | fss1000 | deepglobe | isic | chest_xray | folder
    config.data.dataset = "pascal"
    config.data.root = ""  # the dataset's folder (see docs/data.md); synthetic: where to generate
    config.data.cache_dir = ""  # TFDS data dir; empty: <workdir>/tfds
    config.data.fold = 0  # 0..3, or all: every class a base class (cross-domain training)
    config.data.shot = 1
    config.data.image_size = 473
    # padded: longer side to image_size, padded (CWT/RePRI) | squash: resized to a square
    # (PATNet/HSNet: Pillow bilinear, nearest masks, nothing ignored)
    config.data.resize = "padded"
    # List files. PASCAL/COCO: PFENet-format image lists; fss1000/folder: class lists (one
    # class folder a line). Empty: the dataset's default lists
    config.data.train_list = ""
    config.data.val_list = ""
    config.data.test_list = ""  # fss1000/folder only
    # folder only: each split's class folders, instead of a list file; with none given
    # anywhere, every class folder is a test class
    config.data.folder_classes = ml_collections.ConfigDict({"train": (), "val": (), "test": ()})
    config.data.val_root = ""  # FSS-1000 folder for metatrain.val_source=fss1000_val
    config.data.split_convention = "contiguous"  # COCO only: contiguous | interleaved
    config.data.test_dataset = ""  # cross-dataset evaluation: test on this dataset's classes
    config.data.test_root = ""  # and read it from here
    config.data.num_workers = 2
    config.data.synthetic_train = 1500  # synthetic only: number of generated images
    config.data.synthetic_val = 500
    config.data.synthetic_size = 128

    config.model = ml_collections.ConfigDict(type_safe=False)  # layers: an int or a tuple
    # pspnet (trained in stage 1) | a frozen DINOv2 hub model: dinov2_vit{s,b,l,g}14[_reg]
    # (init.backbone: its official checkpoint; data.image_size a multiple of 14)
    config.model.backbone = "pspnet"
    config.model.layers = 50  # 50, 101 or four block counts
    config.model.width = 64
    config.model.bottleneck_dim = 512
    config.model.dropout = 0.1
    config.model.dtype = "float32"  # backbone computation: float32 or bfloat16

    config.init = ml_collections.ConfigDict()
    config.init.resnet = ""  # ImageNet deep-base ResNet .pth for stage 1; empty: random
    config.init.backbone = ""  # PSPNet or DINOv2 .pth, or orbax checkpoint; empty: stage 1's
    config.init.cwt = ""  # CWT .pth or orbax checkpoint; empty: stage 2's result

    config.pretrain = ml_collections.ConfigDict()
    config.pretrain.epochs = 100
    config.pretrain.batch_size = 12
    config.pretrain.image_size = 417
    config.pretrain.optimizer = "sgd"  # any optax optimiser taking learning_rate
    config.pretrain.optimizer_args = ml_collections.ConfigDict({"momentum": 0.9, "nesterov": True})
    config.pretrain.lr = 0.0025  # cosine schedule to final_lr, stepped per iteration
    config.pretrain.final_lr = 1e-6
    config.pretrain.weight_decay = 1e-4  # coupled, as PyTorch's
    config.pretrain.label_smoothing = 0.1
    config.pretrain.scale_range = ()  # e.g. (0.5, 2.0); empty: no random scale
    config.pretrain.rotation_range = ()  # e.g. (-10, 10); empty: no rotation
    config.pretrain.val_images = 0  # base-class validation images per epoch; 0: all
    config.pretrain.checkpoint_every = 500  # steps
    config.pretrain.log_every = 50  # steps between fetches of the metrics from the device

    config.inner = ml_collections.ConfigDict()
    config.inner.optimizer = "sgd"  # any optax optimiser taking learning_rate
    config.inner.optimizer_args = ml_collections.ConfigDict()  # e.g. {"momentum": 0.9}
    config.inner.lr = 0.1
    config.inner.weight_decay = 0.0
    config.inner.steps = 200
    # torch: uniform(+-1/sqrt(C)) as nn.Conv2d | zeros | learned: meta-learned (MAML),
    # from zeros; needs metatrain.inner_gradient first_order or full
    config.inner.init = "torch"
    # Meta-learn a factor exp(log_lr) on each weight's inner updates (Meta-SGD), from 1;
    # needs metatrain.inner_gradient first_order or full
    config.inner.learn_lr = False
    # What the inner loop fits, and on what: support (CWT's: the (2, C) classifier on the
    # supports' cross-entropy) | transductive (the same classifier on that cross-entropy
    # plus RePRI's entropy and KL terms on the query's features, scheduled by
    # inner.repri.weights, fb_param_update and fb_param_type) | repri (RePRI's own
    # inference, inner.repri; a prototype classifier the CWT does not adapt)
    config.inner.objective = "support"
    # RePRI's inference (config_files/pascal.yaml's CLASSIFIER and EVALUATION.norm_feat):
    # the official settings, named as there
    config.inner.repri = ml_collections.ConfigDict()
    config.inner.repri.temperature = 20.0
    config.inner.repri.adapt_iter = 50  # the loop's range(1, adapt_iter): 49 updates
    config.inner.repri.fb_param_update = (10,)  # iterations that re-estimate π; λ2 += 1
    config.inner.repri.fb_param_type = "soft"  # π from the predicted proportions
    config.inner.repri.weights = (1.0, "auto", "auto")  # λ1 CE, λ2 KL, λ3 H; auto: 1/shot
    config.inner.repri.norm_feat = True  # L2-normalise the features first
    # The query pixels the KL and entropy count: labelled (the official code: those not
    # 255 in the query's label, i.e. not padding nor VOC's object borders) | all (no
    # label read). The transductive objective counts all of them
    config.inner.repri.query_pixels = "labelled"
    config.inner.repri.optimizer = "sgd"  # any optax optimiser taking learning_rate
    config.inner.repri.optimizer_args = ml_collections.ConfigDict()
    config.inner.repri.lr = 0.025
    config.inner.repri.weight_decay = 0.0  # coupled, as PyTorch's

    config.cwt = ml_collections.ConfigDict()
    config.cwt.heads = 4
    config.cwt.dropout = 0.5
    config.cwt.attention_dropout = 0.1

    config.metatrain = ml_collections.ConfigDict()
    config.metatrain.epochs = 20
    config.metatrain.episodes_per_epoch = 6000
    config.metatrain.episodes_per_step = 1
    # How the meta-gradient reaches the inner loop: none (the paper) | first_order (each
    # inner update taken as a constant, as first-order MAML) | full (through every update,
    # rematerialised)
    config.metatrain.inner_gradient = "none"
    config.metatrain.optimizer = "sgd"  # any optax optimiser taking learning_rate
    config.metatrain.optimizer_args = ml_collections.ConfigDict({"momentum": 0.9, "nesterov": True})
    config.metatrain.lr = 0.001
    config.metatrain.weight_decay = 1e-4  # coupled, as PyTorch's
    # The learned inner-loop parts' (inner.init, inner.learn_lr) learning rate, as a
    # multiple of metatrain.lr (the CWT's)
    config.metatrain.inner_params_lr_scale = 1.0
    config.metatrain.val_episodes = 1000
    # novel_val (the original's) | base_holdout | fss1000_val (PATNet's: FSS-1000's val
    # classes, from data.val_root or the run's own fss1000/folder val split)
    config.metatrain.val_source = "novel_val"
    config.metatrain.holdout_fraction = 0.1  # base_holdout: train images kept for validation
    config.metatrain.checkpoint_every = 500  # steps
    config.metatrain.log_every = 100  # steps between fetches of the metrics from the device

    config.eval = ml_collections.ConfigDict()
    # One run per seed: a run's episodes and classifier initialisations depend on its seed
    # only. Empty: eval.num_runs runs of seeds seed, seed + 1, ...
    config.eval.seeds = ()
    config.eval.num_runs = 5
    config.eval.num_episodes = 1000
    config.eval.episodes_per_step = 1
    # Labels compared with the predictions: padded (CWT/RePRI: the padded test-size mask) |
    # original (PFENet's ori_resize: the original mask, logits resized to its longer side)
    # | both (padded at the top of results.json, original under original_resolution)
    config.eval.label_resolution = "padded"
    config.eval.feature_cache = True  # backbone once per image, not per episode (and validation)
    config.eval.cache_dtype = "float32"  # or bfloat16: half the cache memory
    config.eval.cache_batch_size = 8  # images per pass filling the cache, over all eval devices
    config.eval.cache_memory = "device"  # split over devices | replicated | host (RAM)
    config.eval.episodes = ""  # JSON episode list to evaluate instead of sampling
    config.eval.visualize = 0  # number of PNG panels to write
    # Further inner objectives scored on the same episodes beside inner.objective's (each
    # without the CWT), e.g. (support, repri); empty: inner.objective's only
    config.eval.objectives = ()
    return config


def pascal(fold: int, shot: int) -> ml_collections.ConfigDict:
    """PASCAL-5i with the paper's settings."""
    config = base()
    config.data.fold, config.data.shot = fold, shot
    return config


def coco(fold: int, shot: int) -> ml_collections.ConfigDict:
    """COCO-20i with the paper's settings (stage 1: 61 outputs, 20 epochs)."""
    config = base()
    config.data.dataset = "coco"
    config.data.fold, config.data.shot = fold, shot
    config.data.image_size = 417
    config.pretrain.epochs = 20
    return config


def cross_domain(test_dataset: str, shot: int) -> ml_collections.ConfigDict:
    """Trained on PASCAL's 20 classes, evaluated on a cross-domain dataset (PATNet's protocol).

    Stage 1 and 2 on PASCAL with every class a base class (`data.fold=all`), model
    selection on FSS-1000's val classes (`data.val_root`), evaluation at 400 x 400
    squashed (`data.resize=squash`), 600 episodes a run (PATNet's loaders), or each
    FSS-1000 test image once as a query (2,400 episodes).
    """
    config = base()
    with config.data.ignore_type():
        config.data.fold = "all"
    config.data.shot = shot
    config.data.test_dataset = test_dataset
    config.data.resize = "squash"
    config.data.image_size = 400
    config.metatrain.val_source = "fss1000_val"
    config.eval.num_episodes = 2400 if test_dataset == "fss1000" else 600
    return config


def fss1000(shot: int) -> ml_collections.ConfigDict:
    """Within FSS-1000 (HSNet's protocol): meta-trained on trn, selected on val, tested on test.

    Each of the 2,400 test images is a query once, at 400 x 400 squashed. Stage 1 does not
    train on binary masks: the backbone comes from `init.backbone`.
    """
    config = base()
    config.data.dataset = "fss1000"
    config.data.shot = shot
    config.data.resize = "squash"
    config.data.image_size = 400
    config.metatrain.val_source = "fss1000_val"
    config.eval.num_episodes = 2400
    return config


def dinov2(dataset: str, fold: int, shot: int) -> ml_collections.ConfigDict:
    """CWT on frozen DINOv2 ViT-B/14 features: stage 2 and evaluation, no stage 1.

    `init.backbone` must be set to the official checkpoint, dinov2_vitb14_pretrain.pth
    (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth); the
    test size is the dataset's nearest multiple of 14 (476 for PASCAL, 420 for COCO).
    """
    config = pascal(fold, shot) if dataset == "pascal" else coco(fold, shot)
    config.model.backbone = "dinov2_vitb14"
    config.data.image_size = {"pascal": 476, "coco": 420}[dataset]
    return config


def synthetic(fold: int, shot: int) -> ml_collections.ConfigDict:
    """The embedded benchmark: a small PSPNet trained and evaluated on CPU in minutes."""
    config = base()
    config.data.dataset = "synthetic"
    config.data.fold, config.data.shot = fold, shot
    config.data.image_size = 128
    config.data.num_workers = 0  # decoding 128 px images is cheap; workers cost start-up
    config.model.layers = (1, 1, 1, 1)
    config.model.width = 8
    config.model.bottleneck_dim = 64
    config.pretrain.image_size = 128
    config.pretrain.epochs = 6
    config.pretrain.batch_size = 16
    config.pretrain.lr = 0.02
    config.pretrain.checkpoint_every = 100
    config.pretrain.log_every = 25
    config.metatrain.epochs = 4
    config.metatrain.lr = 0.4  # the short schedule needs a far larger step than the paper's
    config.metatrain.episodes_per_epoch = 1500
    config.metatrain.episodes_per_step = 4
    config.metatrain.val_episodes = 96
    config.metatrain.checkpoint_every = 100
    config.metatrain.log_every = 50
    config.inner.steps = 100
    config.eval.num_runs = 5
    config.eval.num_episodes = 200
    config.eval.episodes_per_step = 8
    return config
