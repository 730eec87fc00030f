"""Train-step throughput of a config's model and loss, jaxpose vs an equivalent PyTorch step.

    python -m jaxpose.bench --config experiments/synthetic_hopenet.py [--steps 20] [--torch]

Both sides train the same ResNet (+ binned head, Hopenet loss, Adam) on the
same random batch, after warm-up steps (compilation excluded), in one
process, so the ratio compares the frameworks on one machine. The PyTorch
side (torch is an optional extra) covers ResNet + binned-head configs only.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxpose import sharding, train
from jaxpose.config import load_config, override_args
from jaxpose.models import build_model
from jaxpose.models.resnet import RESNETS


def _batch(config, rng: np.random.Generator) -> dict:
    size, n = config.data.image_size, config.batch_size
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "pose": rng.uniform(-90, 90, (n, 3)).astype(np.float32),
    }


def jax_images_per_sec(config, steps: int, warmup: int = 3) -> float:
    mesh = sharding.make_mesh(config.get("num_devices") or None)
    model = build_model(config.model)
    tx = train.make_optimizer(config.optimizer, 100, 100 + steps)
    state = train.create_state(model, train.init_variables(config, model, mesh), tx, mesh)
    step = train.jit_train_step(config, mesh, sharding.replicated(mesh))
    batch = sharding.put_batch(_batch(config, np.random.default_rng(0)), mesh)
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return steps * config.batch_size / (time.perf_counter() - start)


def _torch_resnet(config):
    import torch
    from torch import nn

    spec = {**RESNETS[config.model.name], **dict(config.model.kwargs)}
    if spec["block"] != "basic" or config.model.head != "binned":
        raise ValueError("the PyTorch reference covers basic-block ResNets with a binned head")

    def block(cin, cout, stride):
        body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return body, skip

    class Net(nn.Module):
        def __init__(self, width, stages, bins):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], width
            for i, n in enumerate(stages):
                for j in range(n):
                    blocks.append(block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
                    cin = width * 2**i
            self.bodies = nn.ModuleList(b for b, _ in blocks)
            self.skips = nn.ModuleList(s for _, s in blocks)
            self.fc = nn.Linear(cin, 3 * bins)
            self.bins = bins

        def forward(self, x):
            x = self.stem(x)
            for body, skip in zip(self.bodies, self.skips):
                x = torch.relu(body(x) + skip(x))
            return self.fc(x.mean((2, 3))).view(-1, 3, self.bins)

    return Net(spec["width"], spec["stage_sizes"], config.model.head_kwargs.granularities[0])


def torch_images_per_sec(config, steps: int, warmup: int = 3) -> float:
    import torch

    net = _torch_resnet(config)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.optimizer.lr)
    batch = _batch(config, np.random.default_rng(0))
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float().div(255)
    pose = torch.from_numpy(batch["pose"])
    lo, hi = config.model.head_kwargs.lo, config.model.head_kwargs.hi
    bins = config.model.head_kwargs.granularities[0]
    width = (hi - lo) / bins
    centres = torch.arange(bins, dtype=torch.float32) * width + lo + width / 2
    labels = ((pose - lo) / width).floor().clamp(0, bins - 1).long()
    alpha = config.losses.hopenet.get("alpha", 1.0)

    def step():
        logits = net(images)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, bins), labels.reshape(-1), reduction="none")
        expectation = (logits.softmax(-1) * centres).sum(-1)
        loss = (ce.view(-1, 3) + alpha * (expectation - pose) ** 2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * config.batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--torch", action="store_true", help="also time the PyTorch reference step")
    args, extra = p.parse_known_args(argv)
    config = load_config(args.config, override_args(extra))
    device = jax.devices()[0].device_kind
    jax_rate = jax_images_per_sec(config, args.steps)
    print(f"jaxpose {jax.__version__} on {jax.device_count()} x {device}: {jax_rate:.1f} img/s")
    if args.torch:
        import torch

        torch_rate = torch_images_per_sec(config, args.steps)
        print(f"torch {torch.__version__} ({torch.get_num_threads()} threads): {torch_rate:.1f} img/s")
        print(f"ratio jaxpose / torch: {jax_rate / torch_rate:.2f}x")


if __name__ == "__main__":
    main()
