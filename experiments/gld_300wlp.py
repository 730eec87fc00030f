"""Gaussian label distribution learning (Liu et al. 2019) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data cache the300w_lp --image_size 224
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose convert torchvision-resnet resnet50-0676ba61.pth --workdir runs/resnet50_imagenet
    jaxpose train --config experiments/gld_300wlp.py --workdir runs/gld --config.init_from=runs/resnet50_imagenet
    jaxpose sweep --config experiments/gld_300wlp.py --workdir runs/gld_alpha --config.init_from=runs/resnet50_imagenet

"Facial Pose Estimation by Deep Learning from Label Distributions": each
angle's label becomes a discretised Gaussian over 66 bins of 3 degrees
(sigma = 4 bins, `losses.gld_target`), learned with the paper's Eq. 5,
L = L_Eu + L_KL + alpha L_MSE: the `gld` term (L_Eu + L_KL, summed over the
batch as the paper does: reduction "sum") plus the `expectation_mse` term
(Hopenet's expectation regression, a mean over the batch) whose weight is
the paper's alpha (0 here). `get_sweep()` runs alpha in
{0, 0.01, 0.1, 1, 2}, one workdir per value (runs/gld_alpha/weight=0.1, ...).

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| init | ImageNet ResNet-50 (not verified) | none published | `init_from` required | as the other ResNet-50 papers |
| crop, flip, blur | not stated | none published | Hopenet's training loader (`hopenet_train`, flip, blur p 0.05); `hopenet` test crop | GLD builds on Hopenet |
| optimizer | Adam 1e-6 (not verified) | none published | Adam 1e-6, one parameter group, BatchNorm training | no groups published |
| target | Eq. 1-3: softmax over exp(-(l-a)^2 / 2 sigma^2) / sigma | none published | normalised Gaussian (`normalized=True`); the literal one with `--config.losses.gld.normalized=False` | the literal target is nearly flat (below) and cannot give the paper's alpha = 0 results |
| reduction | L_Eu, L_KL summed over the batch, L_MSE a mean | none published | the same (`losses.gld.reduction="sum"`) | with per-term means, alpha would be the paper's alpha / batch size |
| alpha | swept 0, 0.01, 0.1, 1, 2 | none published | `losses.expectation_mse.weight`, same values | |
| batch, epochs | not stated | none published | 128, 25 (Hopenet's recipe, which GLD builds on) | |

Settings: ResNet-50 fine-tuned from ImageNet weights (required: without
--config.init_from training stops naming the convert command;
--config.init_from=none trains from scratch), 66 bins over [-99, 99], Adam
lr 1e-6, Hopenet's training loader at 224 px (see hopenet_300wlp.py).

Caution, measured with jaxpose.losses: the paper's literal target (Eq. 1-3)
is nearly flat - for sigma 4 its peak is 0.019 against a floor of 0.015 -
so a model that matches it exactly decodes (softmax expectation over bin
centres) to 2.5 degrees for a 60-degree yaw; the normalised Gaussian decodes
to 61.5. With normalized=False and alpha = 0 expect predictions shrunk
towards 0 (README "Results": 31.7 vs 8.9 mean MAE on synthetic_heads).
With reduction "sum", the logged loss_gld is a sum over the batch of 128
(Adam's steps do not depend on that scale).

Expected result: the paper reports MAE on AFLW2000 and BIWI in its tables;
jaxpose has not verified those numbers, so none are quoted here - compare
with the paper directly (and with hopenet_300wlp.py, 6.16 / 4.90 mean MAE,
the baseline it improves on).
Runtime (estimate, not measured): 25 epochs x 956 steps of 128 images of
224 px through a ResNet-50 in bfloat16, about 2-3 hours on one modern GPU
(the sweep: five times that).
"""

from experiments.hopenet_300wlp import resnet50_300wlp

ALPHAS = (0.0, 0.01, 0.1, 1.0, 2.0)


def get_config():
    config = resnet50_300wlp()
    config.model.head = "binned"
    config.model.head_kwargs = {"granularities": (66,), "lo": -99.0, "hi": 99.0}
    # Eq. 5: L_Eu + L_KL summed over the batch; alpha (the expectation_mse weight) times the mean L_MSE.
    config.losses = {
        "gld": {"weight": 1.0, "sigma": 4.0, "normalized": True, "reduction": "sum", "lo": -99.0, "hi": 99.0},
        "expectation_mse": {"weight": 0.0, "lo": -99.0, "hi": 99.0},
    }
    config.optimizer.lr = 1e-6
    config.batch_size = 128
    config.num_epochs = 25
    return config


def get_sweep():
    return [{"losses.expectation_mse.weight": alpha} for alpha in ALPHAS]
