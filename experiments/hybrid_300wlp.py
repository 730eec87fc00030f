"""Hybrid coarse-fine classification (Wang et al. 2019) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data cache the300w_lp --image_size 224
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose convert torchvision-resnet resnet50-0676ba61.pth --workdir runs/resnet50_imagenet
    jaxpose train --config experiments/hybrid_300wlp.py --workdir runs/hybrid --config.init_from=runs/resnet50_imagenet

"A Hybrid Coarse-Fine Classification for Head Pose Estimation": a ResNet-50
with five classifiers per angle over [-99, 99] - 198, 66, 18, 6 and 2 bins
(1, 3, 11, 33 and 99 degrees) - and the loss
L = sum_i beta_i CE_i + alpha MSE(expectation of the 198-bin softmax),
betas (7, 5, 3, 1, 1), alpha 2 (`losses.hybrid_loss`; the paper's Eq. 1,
each angle with its own heads). ImageNet initialisation is required
(`--config.init_from=none` trains from scratch).

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| init | ImageNet ResNet-50 | torchvision resnet50 weights | `init_from` required | |
| train crop | not verified | Hopenet's Pose_300W_LP crop; Resize(240) + RandomCrop(224) | `hopenet_train` | official |
| test crop | not verified | Hopenet's AFLW2000 crop; Resize(224) + CenterCrop(224) | `eval_crop="hopenet"`, k 0.2, whole crop resized | CenterCrop not reproduced |
| augmentation | not verified | flip p 0.5, PIL BLUR p 0.05 | flip; Gaussian blur p 0.05, sigma U[0.1, 1.7] | as hopenet_300wlp.py |
| optimizer | not verified | Adam 1e-6 | Adam 1e-6 | official |
| parameter groups | not verified | conv1/bn1 lr 0, layer1-4 lr, 12 of the 15 fc heads 5 lr | stem 0, every head 5x | see below |
| BatchNorm | not verified | layer1-4's bn* .eval() | `freeze_batch_stats="blocks"` | official |
| batch, epochs | not verified | 32, 25 (`--batch_size`, `--num_epochs` defaults) | 32, 25 | official |
| loss | betas 7,5,3,1,1, alpha 2 | the same; roll's 2-bin term uses pitch's | the paper's | the roll term is a slip |

Official code: haofanwang/accurate-head-pose, `train_hopenet.py` and
`datasets.py` (Pose_300W_LP_multi), built on deep-head-pose. Not
reproduced from it: get_fc_params lists fc_*, fc_*_1..3 but not the 2-bin
fc_*_4, which are in no Adam group and so never move from their random
initialisation (to do the same: --config.optimizer.lr_multipliers.head/fc_yaw_2=0
and likewise fc_pitch_2, fc_roll_2); and the roll loss adds
`1*loss_pitch_4` where `loss_roll_4` is meant. The paper's own settings
were not checked here (its text could not be retrieved), hence "not verified".

Expected result: the paper reports MAE on AFLW2000 and BIWI in its tables;
jaxpose has not verified those numbers, so none are quoted here - compare
with the paper directly (and with hopenet_300wlp.py, 6.16 / 4.90 mean MAE,
the baseline it extends).
Runtime (estimate, not measured): 25 epochs x 3,825 steps of 32 images of
224 px through a ResNet-50 in bfloat16, about 2-3 hours on one modern GPU.
"""

from experiments.hopenet_300wlp import official_groups, resnet50_300wlp

GRANULARITIES = (198, 66, 18, 6, 2)
BETAS = (7.0, 5.0, 3.0, 1.0, 1.0)


def get_config():
    config = official_groups(resnet50_300wlp())  # the hybrid code's groups are Hopenet's
    config.model.head = "binned"
    config.model.head_kwargs = {"granularities": GRANULARITIES, "lo": -99.0, "hi": 99.0}
    config.losses = {"hybrid": {"weight": 1.0, "betas": BETAS, "alpha": 2.0, "lo": -99.0, "hi": 99.0}}
    config.optimizer.lr = 1e-6
    config.batch_size = 32
    config.num_epochs = 25
    config.checkpoint_every = 5000
    return config
