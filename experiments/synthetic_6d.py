"""6DRepNet's head and loss on synthetic_heads, sized for a 2-core CPU.

    jaxpose train --config experiments/synthetic_6d.py --workdir runs/synthetic_6d
    jaxpose eval --config experiments/synthetic_6d.py --workdir runs/synthetic_6d

synthetic_hopenet.py's CPU setting, unchanged (`cpu_resnet`: ResNet-10 of
width 24 at 64 px from scratch, float32, Adam 1e-3 with warm-up and cosine
decay, batch 64, 2000 steps; random crop scale 0.9-1.1, shift 5 %, flips),
with the `rotation_6d` head (6 outputs -> Gram-Schmidt -> rotation matrix,
Euler angles decoded from it for every metric) trained with the geodesic
loss alone. The flipped examples' labels are (-yaw, pitch, -roll), whose
matrix is the mirrored rotation F R F (tests/test_rotations.py).
Measured on 2 CPU cores shared with other jobs (jax 0.10.2): 15.4 minutes
for training and evaluation; synthetic test split MAE yaw 4.82, pitch 10.54,
roll 10.70, mean 8.69; geodesic error 9.27, TriNet's MAEv 7.29 (README "Results").

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| data | 300W-LP | 300W-LP | synthetic_heads (generated) | runs anywhere, no download |
| model | RepVGG-B1g2, ImageNet init | the same | ResNet-10 width 24, from scratch | 2-core CPU budget, same backbone as synthetic_hopenet.py |
| head | 6D + Gram-Schmidt | linear 6, compute_rotation_matrix_from_ortho6d | `rotation_6d` | the paper's |
| loss | geodesic distance | GeodesicLoss, eps 1e-7, batch mean | `geodesic` (eps 1e-7), batch mean | the paper's |
| optimizer | see sixdrepnet_300wlp.py | see sixdrepnet_300wlp.py | as synthetic_hopenet.py | the same budget as the Euler methods' CPU rows |
"""

from experiments.synthetic_hopenet import get_config as hopenet_cpu_config


def get_config():
    config = hopenet_cpu_config()  # cpu_resnet(2000 steps), scale 0.9-1.1, shift 5 %
    config.model.head = "rotation_6d"
    config.model.head_kwargs = {}
    config.losses = {"geodesic": {"weight": 1.0}}
    return config
