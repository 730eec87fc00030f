"""Gaussian label distribution learning (Liu et al. 2019) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose train --config experiments/gld_300wlp.py --workdir runs/gld
    jaxpose sweep --config experiments/gld_300wlp.py --workdir runs/gld_alpha

"Facial Pose Estimation by Deep Learning from Label Distributions": each
angle's label becomes a discretised Gaussian over 66 bins of 3 degrees
(sigma = 4 bins, the paper's Eq. 1-3, `losses.gld_target`), learned with
L = L_Eu + L_KL (`losses.gld_loss`, alpha = 0). `get_sweep()` runs the
weights alpha in {0, 0.01, 0.1, 1, 2} of the added Hopenet expectation
regression, one workdir per value (runs/gld_alpha/alpha=0.1, ...).

Settings: ResNet-50 (start from ImageNet weights: --config.init_from=<a
workdir made by `jaxpose convert torchvision-resnet`), 66 bins over
[-99, 99], Adam lr 1e-6, Hopenet's loose 224 px crops (k ~ U[0.2, 0.4] in
training, 0.2 at test) with random flip. Batch 128 and 25 epochs are
Hopenet's recipe, which the GLD paper builds on; they are not stated here
from the GLD paper itself.

Caution, measured with jaxpose.losses: the paper's target (Eq. 1-3, a
softmax over exp(-(l - a)^2 / 2 sigma^2) / sigma) is nearly flat - for sigma
4 its peak is 0.019 against a floor of 0.015 - so a model that matches it
exactly decodes (softmax expectation over bin centres) to 2.5 degrees for a
60-degree yaw. With alpha = 0 expect predictions shrunk towards 0; alpha > 0
(the sweep) or --config.losses.gld.normalized=True (a normalised discretised
Gaussian, which decodes to 61.5) counter it.

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
    config.losses = {"gld": {"weight": 1.0, "alpha": 0.0, "sigma": 4.0, "lo": -99.0, "hi": 99.0}}
    config.optimizer.lr = 1e-6
    config.batch_size = 128
    config.num_epochs = 25
    return config


def get_sweep():
    return [{"losses.gld.alpha": alpha} for alpha in ALPHAS]
