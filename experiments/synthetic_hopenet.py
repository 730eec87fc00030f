"""Hopenet on synthetic_heads: the `make demo` default, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_hopenet.py --workdir runs/synthetic_hopenet

A ResNet-10 (one basic block per stage, width 24) at 64x64 px with Hopenet's
66-bin head and multi-loss (alpha = 1), Adam 1e-3 with warm-up and cosine
decay, batch 64, 2000 steps (about 11 epochs of the 12,000 training images),
random crop scale 0.9-1.1, shift 5 %, flips. Expected on the synthetic test
split (measured, see README "Results"): mean MAE about 7 degrees after about
8 minutes of training on 2 CPU cores.

`cpu_resnet` is the CPU setting the other synthetic_* ResNet experiments share.

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| data | 300W-LP | 300W-LP | synthetic_heads (generated) | runs anywhere, no download |
| model | ResNet-50, ImageNet init | the same | ResNet-10 width 24, from scratch, one group | 2-core CPU budget |
| crop | loose crop | Hopenet's training crop, Scale(240) + RandomCrop(224) | `hopenet` test crop, scale U[0.9, 1.1], shift 5 % | as measured (README "Results") |
| optimizer | Adam 1e-5, batch 128, 25 epochs | Adam, groups 0 / 1 / 5 | Adam 1e-3, warm-up + cosine, batch 64, 2000 steps | training from scratch in minutes |
| alpha | 2 (and 1) | 0.001 (default) | 1 | as measured |

See hopenet_300wlp.py for the paper's recipe and the official code.
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
    # From scratch: none of the 300W-LP configs' ImageNet fine-tuning settings.
    config.require_init = False
    config.optimizer.lr_multipliers = {}
    config.model.freeze_batch_stats = ""
    return config


def measured_loader(config):
    """The crop and blur the README's synthetic results were measured with: Hopenet's test crop in training
    too and no blur (the 300W-LP configs have since moved to Hopenet's training crop and blur)."""
    config.data.crop = "hopenet"
    config.data.eval_crop = ""
    config.data.blur_prob = 0.0
    config.data.blur_max_sigma = 1.5
    return config


def get_config():
    config = cpu_resnet(base_config(), num_train_steps=2000)
    config.data.scale = (0.9, 1.1)
    config.data.shift = 0.05
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 1.0}}
    return config
