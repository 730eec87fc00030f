"""Hopenet on synthetic_heads: the `make demo` default, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_hopenet.py --workdir runs/synthetic_hopenet

A ResNet-10 (one basic block per stage, width 24) at 64x64 px with Hopenet's
66-bin head and multi-loss (alpha = 1), Adam 1e-3 with cosine decay, batch 64.
Expected on the synthetic test split (2 CPU cores): see README "Results".
"""

from jaxpose.config import base_config


def get_config():
    config = base_config()
    config.data.name = "synthetic_heads"
    config.data.image_size = 64
    config.data.scale = (0.9, 1.1)
    config.data.shift = 0.05
    config.model.name = "resnet10"
    config.model.kwargs = {"width": 24}  # XLA:CPU runs width 24 twice as fast as 32
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 1.0}}
    config.optimizer.lr = 1e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.batch_size = 64
    config.num_train_steps = 2000
    config.log_every = 50
    config.checkpoint_every = 250
    return config
