"""The MTCNN port (jaxpose.inference.mtcnn): shipped weights, the box arithmetic, detection on the real
samples (AFLW2000 up to 70+ degrees of yaw, the BIWI frame) and parity with facenet-pytorch itself."""

import hashlib
import importlib.util
import pathlib
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from input_pipeline import crops
from input_pipeline.datasets import biwi
from jaxpose.angles import from_pose_para
from jaxpose.inference import benchmark, detect, mtcnn, mtcnn_convert


@pytest.fixture(scope="module")
def aflw(testdata):
    """The 16 AFLW2000 samples: (paths, RGB images, landmark boxes (16, 4), labelled poses (16, 3))."""
    paths = sorted((testdata / "aflw2000").glob("*.jpg"))
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    mats = [scipy.io.loadmat(p.with_suffix(".mat")) for p in paths]
    boxes = np.stack([crops.landmark_box(m["pt2d"].T, rule="fsanet") for m in mats])
    poses = np.stack([from_pose_para(m["Pose_Para"][0]) for m in mats])
    return paths, images, boxes, poses


@pytest.fixture(scope="module")
def biwi_frame(testdata):
    """The BIWI frame: (RGB image, the 160 mm head box projected from the annotated head centre)."""
    folder = testdata / "biwi" / "hpdb" / "01"
    image = cv2.cvtColor(cv2.imread(str(folder / "frame_00003_rgb.png")), cv2.COLOR_BGR2RGB)
    calibration = biwi.read_calibration(folder / "rgb.cal")
    _, centre = biwi.read_pose(folder / "frame_00003_pose.txt")
    return image, crops.biwi_head_box(centre, **calibration)


@pytest.fixture(scope="module")
def detector():
    return mtcnn.MTCNN()


@pytest.fixture(scope="module")
def aflw_found(detector, aflw):
    """MTCNN on the 16 AFLW2000 images as one batch (equal sizes)."""
    return detector.detect(aflw[1])


def test_shipped_weights_are_the_converted_facenet_weights():
    assert hashlib.sha256(mtcnn.WEIGHTS.read_bytes()).hexdigest() == mtcnn_convert.NPZ_SHA256
    params = mtcnn.load_params()
    assert params["pnet"]["conv1"]["kernel"].shape == (3, 3, 3, 10)  # torch (10, 3, 3, 3)
    assert params["rnet"]["dense4"]["kernel"].shape == (576, 128)  # torch (128, 576)
    assert params["onet"]["prelu5"]["alpha"].shape == (256,)
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == 6_632 + 100_178 + 389_040  # P-Net, R-Net, O-Net parameters (facenet-pytorch's models)
    licence = (mtcnn.WEIGHTS.parent / "LICENSE.facenet-pytorch").read_text()
    assert licence.startswith("MIT License") and "Timothy Esler" in licence


def test_weights_errors(tmp_path):
    with np.load(mtcnn.WEIGHTS) as data:
        tensors = {key: data[key] for key in data.files}
    bad = dict(tensors, **{"rnet/dense4.weight": tensors["rnet/dense4.weight"][:, :10]})
    mtcnn_convert.write_npz(bad, tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"rnet/dense4.weight has shape \(10, 128\), expected \(576, 128\)"):
        mtcnn.load_params(tmp_path / "bad.npz")
    mtcnn_convert.write_npz({k: v for k, v in tensors.items() if k != "onet/conv4.bias"}, tmp_path / "less.npz")
    with pytest.raises(ValueError, match="missing tensor onet/conv4.bias"):
        mtcnn.load_params(tmp_path / "less.npz")
    mtcnn_convert.write_npz(dict(tensors, extra=np.zeros(3, np.float32)), tmp_path / "more.npz")
    with pytest.raises(ValueError, match="unexpected tensors extra"):
        mtcnn.load_params(tmp_path / "more.npz")


def test_pyramid_scales_and_ceil_pooling():
    # 12 / 20 = 0.6: min side 100 -> 60, 42.5, 30.2, 21.4, 15.2, 10.7 (< 12 stops): five scales.
    scales = mtcnn.pyramid_scales(100, 140, 20, 0.709)
    np.testing.assert_allclose(scales, [0.6 * 0.709**k for k in range(5)])
    assert mtcnn.pyramid_scales(19, 500, 20, 0.709) == []  # smaller than the smallest face
    # PyTorch ceil_mode: 22 -> 11 windows of 3 with stride 2 (floor mode would give 10), the last one partial.
    x = jnp.arange(22.0).reshape(1, 22, 1, 1) * jnp.ones((1, 1, 22, 1))
    pooled = mtcnn._ceil_pool(x, 3, 2)
    assert pooled.shape == (1, 11, 11, 1)
    np.testing.assert_array_equal(pooled[0, :, 0, 0], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21])


def test_area_windows_are_torch_adaptive_pooling():
    # interpolate(mode="area") from 5 to 3 cells: windows [0, 2), [1, 4), [3, 5) (floor / ceil of i * 5 / 3).
    lo, hi = mtcnn._area_windows(np.array([10]), np.array([5]), 3)
    np.testing.assert_array_equal(lo, [[10, 11, 13]])
    np.testing.assert_array_equal(hi, [[12, 14, 15]])
    image = np.random.default_rng(0).integers(0, 256, (1, 7, 9, 3), dtype=np.uint8)
    table = mtcnn._integral(jnp.asarray(image))
    rows = mtcnn._area_windows(np.array([2]), np.array([5]), 3)
    cols = mtcnn._area_windows(np.array([1]), np.array([8]), 4)
    means = mtcnn._window_means(table, jnp.zeros(1, jnp.int32), *rows, *cols)
    expected = [[image[0, r0:r1, c0:c1].mean((0, 1)) for c0, c1 in zip(*[c[0] for c in cols])]
                for r0, r1 in zip(*[r[0] for r in rows])]
    np.testing.assert_allclose(means[0], expected, rtol=1e-6)


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 4, 4]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(0, 1) = 90 / 110 = 0.82; box 3 lies inside box 0: IoU 16 / 100, overlap over the smaller area 25/25.
    np.testing.assert_array_equal(mtcnn.nms(boxes, scores, 0.5), [3, 0, 2])
    np.testing.assert_array_equal(mtcnn.nms(boxes, scores, 0.7, mode="min"), [3, 2])
    image = np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(np.sort(mtcnn.batched_nms(boxes, scores, image, 0.5)), [0, 1, 2, 3])


def test_finds_the_aflw2000_faces(aflw, aflw_found):
    """At least 15 of the 16 samples (yaw up to 71 degrees); the labelled face is matched by IoU with its
    landmark box."""
    _, _, boxes, poses = aflw
    matched = [detect.match_box(box, found.boxes, min_iou=0.4) for box, found in zip(boxes, aflw_found)]
    found = [m is not None for m in matched]
    print("AFLW2000 faces found:", sum(found), "of 16; |yaw| of the missed:", np.abs(poses[~np.array(found), 0]))
    assert sum(found) >= 15
    scores = [f.scores[m] for f, m in zip(aflw_found, matched) if m is not None]
    assert min(scores) > 0.9 and all(f.landmarks.shape == (len(f), 5, 2) for f in aflw_found)
    assert max(abs(poses[i, 0]) for i in range(16) if found[i]) > 60  # profiles are found, not only frontal faces


def test_finds_the_biwi_face(detector, biwi_frame):
    image, head_box = biwi_frame
    found = detector(image)
    index = detect.match_box(head_box, found.boxes, min_iou=0.4)
    assert index is not None, (found.boxes, head_box)
    assert found.scores[index] > 0.9


def test_no_face_in_noise_and_tiny_images(detector):
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8), (0, 0), 2)
    tiny = np.full((15, 15, 3), 128, np.uint8)
    for found in detector.detect([noise, tiny]):
        assert found.boxes.shape == (0, 4) and found.scores.shape == (0,) and found.landmarks.shape == (0, 5, 2)
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector(noise.astype(np.float32))


def test_batch_equals_single_images(detector, aflw, aflw_found):
    single = detector(aflw[1][3])
    np.testing.assert_allclose(single.boxes, aflw_found[3].boxes, atol=1e-3)
    np.testing.assert_allclose(single.scores, aflw_found[3].scores, atol=1e-5)


def test_large_image_is_searched_reduced(aflw, aflw_found):
    """A 4x enlarged image searched at max_side 900 (half its size) finds the face at 4x its box."""
    big = cv2.resize(aflw[1][0], (1800, 1800), interpolation=cv2.INTER_LINEAR)
    small, factor = mtcnn.MTCNN(max_side=900)._fit(big)
    assert small.shape == (900, 900, 3) and np.allclose(factor, 2.0)
    found = mtcnn.MTCNN(max_side=900)(big)
    index = detect.match_box(aflw_found[0].boxes[0] * 4, found.boxes, min_iou=0.7)
    assert index is not None, (found.boxes, aflw_found[0].boxes[0] * 4)


# --- parity with facenet-pytorch 2.6.0 (torch CPU) ----------------------------------------------------


@pytest.fixture(scope="module")
def facenet():
    """facenet-pytorch's detect_face and nets (skipped only without torch; make test installs facenet-pytorch)."""
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.fail("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0 (make test does)")
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("torchvision") is None:  # CI installs torch alone
            for name, module in benchmark.standin_modules(torch).items():
                patch.setitem(sys.modules, name, module)
        from facenet_pytorch.models import mtcnn as facenet_mtcnn
        from facenet_pytorch.models.utils import detect_face

        nets = {"pnet": facenet_mtcnn.PNet(), "rnet": facenet_mtcnn.RNet(), "onet": facenet_mtcnn.ONet()}
        yield torch, nets, detect_face.detect_face
    for name in [n for n in sys.modules if n.startswith("facenet_pytorch")]:
        del sys.modules[name]  # they hold the stand-in


def test_conversion_reproduces_the_shipped_file(facenet, tmp_path):
    import facenet_pytorch

    data = pathlib.Path(facenet_pytorch.__file__).parent / "data"
    digest = mtcnn_convert.write_npz(mtcnn_convert.read_facenet_weights(data), tmp_path / "mtcnn.npz")
    assert digest == mtcnn_convert.NPZ_SHA256


def test_nets_match_facenet_pytorch(facenet):
    torch, nets, _ = facenet
    params = mtcnn.load_params()
    rng = np.random.default_rng(0)
    for net, size in (("pnet", 31), ("rnet", 24), ("onet", 48)):
        x = rng.uniform(-1, 1, (32, size, size, 3)).astype(np.float32)  # 32 boxes: the detector's compilation
        if net == "pnet":
            ours = mtcnn.PNet().apply({"params": params[net]}, jnp.asarray(x[:2]))
            x = x[:2]
        else:
            ours = mtcnn._refine(net, params[net], jnp.asarray(x))
        with torch.no_grad():
            theirs = nets[net](torch.from_numpy(x).permute(0, 3, 1, 2))
        if net == "pnet":  # (offsets NCHW, probs NCHW) vs (prob NHW, offsets NHWC)
            np.testing.assert_allclose(ours[0], theirs[1][:, 1].numpy(), atol=2e-6)
            np.testing.assert_allclose(ours[1], theirs[0].permute(0, 2, 3, 1).numpy(), atol=2e-5)
            continue
        np.testing.assert_allclose(ours[0], theirs[-1][:, 1].numpy(), atol=2e-6)  # face probability
        np.testing.assert_allclose(ours[1], theirs[0].numpy(), atol=2e-5)  # box offsets
        if net == "onet":
            np.testing.assert_allclose(ours[2], theirs[1].numpy(), atol=2e-5)  # landmarks


def test_detections_match_facenet_pytorch(facenet, detector, aflw, aflw_found, biwi_frame):
    """Same faces, boxes within 0.05 px, scores within 1e-5, landmarks within 0.05 px, on five real images
    (yaw -55 to 71 degrees, and BIWI; all 17 agree too, but facenet-pytorch takes about 2 s an image here)."""
    torch, nets, detect_face = facenet
    chosen = [np.argmax(aflw[3][:, 0]), np.argmin(aflw[3][:, 0]), 0, 7]  # the two largest |yaw|, two others
    for image, ours in [*((aflw[1][i], aflw_found[i]) for i in chosen), (biwi_frame[0], detector(biwi_frame[0]))]:
        with torch.no_grad():
            boxes, points = detect_face(image, 20, nets["pnet"], nets["rnet"], nets["onet"], [0.6, 0.7, 0.7],
                                        0.709, "cpu")
        theirs = np.asarray(boxes[0], np.float32).reshape(-1, 5)
        order = np.argsort(-theirs[:, 4], kind="stable")
        assert len(ours) == len(theirs)
        np.testing.assert_allclose(ours.boxes, theirs[order, :4], atol=0.05)
        np.testing.assert_allclose(ours.scores, theirs[order, 4], atol=1e-5)
        np.testing.assert_allclose(ours.landmarks, np.asarray(points[0], np.float32)[order], atol=0.05)
