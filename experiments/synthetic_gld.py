"""Gaussian label distribution learning on synthetic_heads, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_gld.py --workdir runs/synthetic_gld
    jaxpose sweep --config experiments/synthetic_gld.py --workdir runs/synthetic_gld_alpha

gld_300wlp.py's head and loss (66 bins, sigma 4, L_Eu + L_KL, alpha = 0;
`get_sweep` the same alphas 0, 0.01, 0.1, 1, 2) on the generated
synthetic_heads dataset with the CPU backbone of synthetic_hopenet.py: a
ResNet-10 of width 24 trained from scratch at 64 px in float32, so Adam lr
1e-3 (the paper's 1e-6 fine-tunes ImageNet weights) with warm-up and cosine
decay, batch 64, 600 steps.
With alpha = 0 the paper's nearly flat target decodes towards 0 (see
gld_300wlp.py); compare the sweep's alphas.
Measured on 2 CPU cores (jax 0.10.2), 2.6-2.7 minutes each; synthetic test
split mean MAE 31.72 with the paper's target at alpha = 0 (it decodes towards
0, see above), 8.89 (yaw 6.89, pitch 9.49, roll 10.28) with
--config.losses.gld.normalized=True.
"""

from experiments.gld_300wlp import get_config as paper_config
from experiments.synthetic_hopenet import cpu_resnet


def get_config():
    return cpu_resnet(paper_config(), num_train_steps=600)
