"""SSR-Net-MD on synthetic_heads, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_ssrnet_md.py --workdir runs/synthetic_ssrnet_md

The model and recipe of ssrnet_md.py (64 px FSA-Net crops, raw BGR 0-255,
random crop and zoom 0.8-1.2, MAE loss, Adam lr 1e-3) on the generated
synthetic_heads dataset: batch 32, 600 steps, cosine decay instead of the
30-epoch step decay, random flips.
Measured on 2 CPU cores (jax 0.10.2): 7.6 minutes in all (about 50
images/s); synthetic test split MAE yaw 15.49, pitch 13.93, roll 14.06,
mean 14.49.

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| data | 300W-LP | 300W-LP (80 %) | synthetic_heads | runs anywhere, no download |
| batch | 16 | 8 | 32 | as measured (a short CPU run) |
| schedule | Adam 1e-3, x0.1 every 30 of 90 epochs | the same | Adam 1e-3, warm-up + cosine, 600 steps | a short CPU run |
| flip | not stated | none | random flip | synthetic_heads has no mirrored copies |
| model, crop, loss | see ssrnet_md.py | | as ssrnet_md.py | |
"""

from experiments.ssrnet_md import get_config as paper_config
from experiments.synthetic_fsanet import cpu_fsa


def get_config():
    return cpu_fsa(paper_config())
