"""Hopenet on synthetic_heads: the `make demo` default, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_hopenet.py --workdir runs/synthetic_hopenet

A ResNet-10 (one basic block per stage, width 24) at 64x64 px with Hopenet's
66-bin head and multi-loss (alpha = 1), Adam 1e-3 with warm-up and cosine
decay, batch 64, 2000 steps (about 11 epochs of the 12,000 training images),
random crop scale 0.9-1.1, shift 5 %, flips. Expected on the synthetic test
split (measured, see README "Results"): mean MAE about 7 degrees after about
8 minutes of training on 2 CPU cores.

`cpu_resnet` is the CPU setting the other synthetic_* ResNet experiments share.
"""

from jaxpose.config import base_config


def cpu_resnet(config, num_train_steps: int):
    """synthetic_heads at 64 px with a ResNet-10 of width 24 (XLA:CPU runs it twice as fast as width 32),
    float32, trained from scratch: Adam 1e-3 with warm-up and cosine decay, batch 64 images."""
    config.data.name = "synthetic_heads"
    config.data.image_size = 64
    config.data.num_workers = 0
    config.eval_on = ()
    config.model.name = "resnet10"
    config.model.kwargs = {"width": 24}
    config.model.dtype = "float32"
    config.optimizer.lr = 1e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.batch_size = 64
    config.num_train_steps = num_train_steps
    config.log_every = 50
    config.checkpoint_every = 250
    return config


def get_config():
    config = cpu_resnet(base_config(), num_train_steps=2000)
    config.data.scale = (0.9, 1.1)
    config.data.shift = 0.05
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 1.0}}
    return config
