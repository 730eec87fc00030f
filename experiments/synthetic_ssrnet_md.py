"""SSR-Net-MD on synthetic_heads, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_ssrnet_md.py --workdir runs/synthetic_ssrnet_md

The model and recipe of ssrnet_md.py (64 px FSA-Net crops, raw BGR 0-255,
random crop and zoom 0.8-1.2, MAE loss, Adam lr 1e-3) on the generated
synthetic_heads dataset: batch 32, 600 steps, cosine decay instead of the
30-epoch step decay, random flips.
Measured on 2 CPU cores (jax 0.10.2): 7.6 minutes in all (about 50
images/s); synthetic test split MAE yaw 15.49, pitch 13.93, roll 14.06,
mean 14.49.
"""

from experiments.ssrnet_md import get_config as paper_config
from experiments.synthetic_fsanet import cpu_fsa


def get_config():
    return cpu_fsa(paper_config())
