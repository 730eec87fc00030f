"""PyTorch converters against reference networks built here from plain torch.nn layers.

The references follow torchvision's ResNet layout (v1.5: a bottleneck's
stride on its 3x3 conv) and the original Hopenet (ResNet + fc_yaw/pitch/roll,
decoded as sum(softmax * idx) * 3 - 99), with random weights and random
BatchNorm running statistics, so eval-mode BatchNorm is not the identity.
"""

import functools
import json
import os
import sys

import flax
import jax
import numpy as np
import pytest

from jaxpose import checkpoint
from jaxpose.config import apply_overrides, base_config
from jaxpose.models import build_model
from jaxpose.pretrained_torch import (
    convert,
    hopenet_from_torch,
    hopenet_model,
    infer_resnet_depth,
    load_state_dict,
    resnet_from_torchvision,
)

LAYOUTS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True)}
ATOL = 1e-4


@pytest.fixture(scope="module")
def torch():
    """The torch module; missing is a failure under CI (CI set), a skip elsewhere."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("torch is not installed (pip install torch); the converters must be tested under CI")
        pytest.skip("torch is not installed")
    torch.manual_seed(0)
    # One thread: these forwards are tiny, and OpenMP threads spin on a shared machine (seconds lost).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def reference_resnet(torch, depth: int, hopenet: bool = False):
    """A torchvision-layout ResNet (or Hopenet) from torch.nn layers, in eval mode, randomised."""
    nn = torch.nn
    stage_sizes, bottleneck = LAYOUTS[depth]
    expansion = 4 if bottleneck else 1

    class Block(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int):
            super().__init__()
            out = planes * expansion
            if bottleneck:
                self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
                self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
                self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(out)
            else:
                self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
                self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn1, self.bn2, self.relu = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes), nn.ReLU()
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            if bottleneck:
                y = self.bn3(self.conv3(self.relu(y)))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for i, num_blocks in enumerate(stage_sizes):
                blocks = []
                for j in range(num_blocks):
                    blocks.append(Block(inplanes, 64 * 2**i, 2 if i > 0 and j == 0 else 1))
                    inplanes = 64 * 2**i * expansion
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            if hopenet:
                self.fc_yaw, self.fc_pitch, self.fc_roll = (nn.Linear(inplanes, 66) for _ in range(3))
                self.fc_finetune = nn.Linear(inplanes + 3, 3)  # in the released files, unused at inference
            else:
                self.fc = nn.Linear(inplanes, 1000)

        def features(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

        def forward(self, x):
            f = self.features(x)
            return (self.fc_yaw(f), self.fc_pitch(f), self.fc_roll(f)) if hopenet else self.fc(f)

    model = Net()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def images(torch, size: int = 64):
    x = torch.randn(2, 3, size, size)
    return x, x.permute(0, 2, 3, 1).numpy()  # NCHW for torch, NHWC for jax


@functools.cache
def hopenet_apply(depth: int):
    """One jitted Hopenet apply per depth returning (outputs, pooled backbone features).

    Shared by the torchvision and Hopenet tests: XLA compiles a ResNet-50 once.
    """

    def apply(variables, x):
        outputs, state = hopenet_model(depth).apply(
            variables, x, train=False, capture_intermediates=lambda module, _: module.name == "backbone"
        )
        return outputs, state["intermediates"]["backbone"]["__call__"][0]

    return jax.jit(apply)


def with_zero_head(variables: dict, depth: int) -> dict:
    """Backbone variables plus a zero Hopenet head, to run them with hopenet_apply."""
    shapes = jax.eval_shape(lambda: hopenet_model(depth).init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3)), False))
    head = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"]["head"])
    return {"params": {**variables["params"], "head": head}, "batch_stats": variables["batch_stats"]}


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_features_match_torch(torch, tmp_path, depth):
    model = reference_resnet(torch, depth)
    torch.save(model.state_dict(), tmp_path / "resnet.pth")
    x_torch, x_jax = images(torch)
    with torch.no_grad():
        expected = model.features(x_torch).numpy()
    variables = resnet_from_torchvision(tmp_path / "resnet.pth", depth)
    assert set(variables["params"]) == {"backbone"} and set(variables["batch_stats"]) == {"backbone"}
    _, got = hopenet_apply(depth)(with_zero_head(variables, depth), x_jax)
    assert got.shape == expected.shape == (2, 512 * (4 if depth == 50 else 1))
    assert expected.std() > 0.1  # non-trivial features: a wrong layout would show
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=ATOL)


def torch_hopenet_decode(torch, logits):
    """The original decoding: sum_k softmax_k * k * 3 - 99 (degrees)."""
    idx = torch.arange(66, dtype=torch.float32)
    return torch.sum(torch.softmax(logits, dim=1) * idx, dim=1) * 3 - 99


def test_hopenet_logits_and_angles_match_torch(torch, tmp_path):
    model = reference_resnet(torch, 50, hopenet=True)
    # DataParallel checkpoints carry a "module." prefix.
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "hopenet.pkl")
    x_torch, x_jax = images(torch)
    with torch.no_grad():
        logits = model(x_torch)
        expected_logits = torch.stack(logits, dim=1).numpy()  # (B, 3, 66) yaw, pitch, roll
        expected_pose = torch.stack([torch_hopenet_decode(torch, l) for l in logits], dim=1).numpy()
    variables = hopenet_from_torch(tmp_path / "hopenet.pkl")
    assert set(variables["params"]["head"]) == {"fc_yaw", "fc_pitch", "fc_roll"}
    outputs, features = hopenet_apply(50)(variables, x_jax)
    np.testing.assert_allclose(np.asarray(features), model.features(x_torch).detach().numpy(), rtol=0, atol=ATOL)
    assert expected_logits.std() > 0.1 and np.abs(expected_pose).max() > 0.1
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected_logits, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(outputs["pose"]), expected_pose, rtol=0, atol=ATOL)


def test_depth_inferred_from_names(torch):
    for depth in LAYOUTS:
        with torch.device("meta"):  # names and shapes only, no memory
            state = reference_resnet(torch, depth).state_dict()
        assert infer_resnet_depth(state) == depth
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 1\)"):
        infer_resnet_depth({f"layer{i}.0.conv1.weight": None for i in (1, 2, 3, 4)})


@pytest.fixture()
def resnet18_state(torch):
    return reference_resnet(torch, 18).state_dict()


def test_not_a_torch_file(torch, tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ValueError, match=r"random\.pth: not a PyTorch state_dict"):
        resnet_from_torchvision(path, 18)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        hopenet_from_torch(tmp_path / "missing.pth")


def test_torch_file_that_is_not_a_state_dict(torch, tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth: not a state_dict .*list"):
        load_state_dict(tmp_path / "list.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: objects, not data
    with pytest.raises(ValueError, match=r"module\.pth: .*a whole pickled model; save model\.state_dict\(\)"):
        load_state_dict(tmp_path / "module.pth")
    torch.save({"conv1.weight": torch.zeros(3), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match=r"mixed\.pth: entry 'epoch' is a int"):
        load_state_dict(tmp_path / "mixed.pth")


def test_missing_tensor_is_named(torch, tmp_path, resnet18_state):
    del resnet18_state["layer1.0.conv1.weight"]
    torch.save(resnet18_state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth: missing tensor 'layer1\.0\.conv1\.weight'"):
        resnet_from_torchvision(tmp_path / "r18.pth", 18)


def test_shape_mismatch_is_named(torch, tmp_path, resnet18_state):
    resnet18_state["layer2.0.downsample.1.running_var"] = torch.ones(64)
    torch.save(resnet18_state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"'layer2\.0\.downsample\.1\.running_var' has shape \(64,\).*\(128,\)"):
        resnet_from_torchvision(tmp_path / "r18.pth", 18)


def test_wrong_depth_and_extra_tensors(torch, tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    missing = r"missing tensor 'layer1\.2\.\w+\.\w+' \(and \d+ more\), needed by a torchvision ResNet-34"
    with pytest.raises(ValueError, match=missing):
        resnet_from_torchvision(tmp_path / "r18.pth", 34)
    with pytest.raises(ValueError, match="depth 19 not supported"):
        resnet_from_torchvision(tmp_path / "r18.pth", 19)
    with pytest.raises(ValueError, match=r"missing tensor 'fc_\w+\.\w+' \(and 5 more\)"):
        hopenet_from_torch(tmp_path / "r18.pth")  # a torchvision file is not a Hopenet
    resnet18_state["layer4.1.conv4.weight"] = torch.zeros(1)
    torch.save(resnet18_state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected tensor 'layer4\.1\.conv4\.weight'"):
        resnet_from_torchvision(tmp_path / "extra.pth", 18)


def test_missing_torch_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match="pip install torch"):
        load_state_dict(tmp_path / "any.pth")


def flat(tree) -> dict:
    return flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, tree))


def assert_same_tensors(restored: dict, expected: dict) -> None:
    restored, expected = flat(restored), flat(expected)
    assert restored.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(restored[key], value, err_msg="/".join(key))


def overrides(record: dict) -> dict:
    return dict(flag.removeprefix("--config.").split("=", 1) for flag in record["overrides"])


def test_convert_hopenet_round_trip(torch, tmp_path):
    model = reference_resnet(torch, 18, hopenet=True)
    torch.save(model.state_dict(), tmp_path / "hopenet18.pkl")
    workdir = tmp_path / "converted"
    directory = convert("hopenet", tmp_path / "hopenet18.pkl", workdir)
    assert directory == workdir.resolve() / "checkpoints"
    assert_same_tensors(checkpoint.restore_model(workdir, None), hopenet_from_torch(tmp_path / "hopenet18.pkl"))
    record = json.loads((workdir / "converted.json").read_text())
    assert (record["kind"], record["depth"], record["config"]["model.head_kwargs.left_edge"]) == ("hopenet", 18, True)
    # The recorded overrides build the model the checkpoint fits, shape for shape.
    config = apply_overrides(base_config(), overrides(record))
    assert config.init_from == str(workdir.resolve())
    built = build_model(config.model)
    shapes = jax.eval_shape(lambda: built.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3)), train=False))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, checkpoint.restore_model(workdir, None))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        convert("hopenet", tmp_path / "hopenet18.pkl", workdir)


def test_convert_torchvision_infers_depth(torch, tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    convert("torchvision-resnet", tmp_path / "r18.pth", tmp_path / "w")
    expected = resnet_from_torchvision(tmp_path / "r18.pth", 18)
    assert_same_tensors(checkpoint.restore_model(tmp_path / "w", None), expected)
    record = json.loads((tmp_path / "w" / "converted.json").read_text())
    assert (record["kind"], record["depth"], record["config"]["model.name"]) == ("torchvision-resnet", 18, "resnet18")
    assert record["config"]["data.normalize"] == "imagenet"
    with pytest.raises(ValueError, match="unknown conversion kind 'keras'; valid: torchvision-resnet, hopenet"):
        convert("keras", tmp_path / "r18.pth", tmp_path / "w2")
