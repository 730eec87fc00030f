"""Hopenet's "regression only" baseline (Ruiz et al., CVPRW 2018): ResNet-50 regressing the three angles with MSE.

    jaxpose train --config experiments/hopenet_regression_300wlp.py --workdir runs/hopenet_regression --config.init_from=runs/resnet50_imagenet

The row of Hopenet's loss ablation that drops the binned classification:
hopenet_300wlp.py's data, backbone and optimiser, with a linear head giving
(yaw, pitch, roll) in degrees (`model.head = "regression"`, kind "linear")
trained with the `mse` loss term, sum over the angles of (pred - label)^2,
mean over the batch. The same swap works on any ResNet config from the
command line: `--config.model.head=regression
--config.model.head_kwargs="{'kind': 'linear'}" --config.losses="{'mse': {}}"`.

| setting | paper | official code (train_resnet50_regression.py) | this config | why |
|---|---|---|---|---|
| head | linear, 3 outputs | nn.Linear(2048, 3), degrees | `RegressionHead(kind="linear")`, degrees | |
| loss | MSE | nn.MSELoss: mean over batch and the 3 angles | `mse`: sum over angles, mean over batch (3x) | a constant factor; Adam's steps do not depend on it |
| head init | - | PyTorch Linear default (uniform, var 1/(3 fan_in)) | lecun normal (var 1/fan_in), zero bias | flax default |
| everything else | | | as hopenet_300wlp.py (its table) | one recipe for both rows |

The paper's ablation numbers are not restated here (not re-checked against
the paper by jaxpose); compare with its table directly.
Runtime: as hopenet_300wlp.py (the head is cheaper); needs a GPU.
"""

from experiments.hopenet_300wlp import get_config as hopenet_config


def get_config():
    config = hopenet_config()
    config.model.head = "regression"
    config.model.head_kwargs = {"kind": "linear"}
    config.losses = {"mse": {"weight": 1.0}}
    return config
