"""Gaussian label distribution learning on synthetic_heads, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_gld.py --workdir runs/synthetic_gld
    jaxpose sweep --config experiments/synthetic_gld.py --workdir runs/synthetic_gld_alpha

gld_300wlp.py's head and loss (66 bins, sigma 4, the normalised Gaussian
target, L_Eu + L_KL summed over the batch, alpha = 0; `get_sweep` the same
alphas 0, 0.01, 0.1, 1, 2 as the expectation_mse weight) on the generated
synthetic_heads dataset with the CPU backbone of synthetic_hopenet.py: a
ResNet-10 of width 24 trained from scratch at 64 px in float32, so Adam lr
1e-3 (the paper's 1e-6 fine-tunes ImageNet weights) with warm-up and cosine
decay, batch 64, 600 steps.
Measured on 2 CPU cores (jax 0.10.2), 2.6-2.7 minutes each; synthetic test
split mean MAE 8.89 (yaw 6.89, pitch 9.49, roll 10.28) with the normalised
target, 31.72 with the paper's literal target at alpha = 0
(--config.losses.gld.normalized=False; it decodes towards 0, see
gld_300wlp.py). Both were measured with the per-term mean; at alpha = 0
the sum differs by the constant factor 64, to which Adam's steps are
invariant (up to its epsilon).

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| data | 300W-LP | none published | synthetic_heads | runs anywhere |
| model | ResNet-50, ImageNet init | none published | ResNet-10 width 24, from scratch | 2-core CPU budget |
| crop, blur | not stated | none published | Hopenet's test crop, no blur | as measured (gld_300wlp.py uses Hopenet's training loader) |
| optimizer | Adam 1e-6 | none published | Adam 1e-3, warm-up + cosine, batch 64, 600 steps | from scratch in minutes |
| loss | Eq. 5 | none published | as gld_300wlp.py | |
"""

from experiments.gld_300wlp import get_config as paper_config
from experiments.gld_300wlp import get_sweep as paper_sweep
from experiments.synthetic_hopenet import cpu_resnet, measured_loader


def get_config():
    return measured_loader(cpu_resnet(paper_config(), num_train_steps=600))


def get_sweep():
    return paper_sweep()
