"""Loss terms against hand-computed values, jit/eager, gradients, and the registry.

Reference values are written out with `math` from each paper's equation on
tiny inputs (3 bins of width 2 over [-3, 3], centres -2, 0, 2), never with
the jnp code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose import angles, losses

LO, HI = -3.0, 3.0  # 3 bins of width 2: [-3,-1), [-1,1), [1,3]; centres -2, 0, 2
CENTRES = (-2.0, 0.0, 2.0)

# One example; rows = yaw, pitch, roll.
LOGITS = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, -1.0]]
ANGLES = [0.5, -3.0, 2.9]  # bins 1, 0, 2
BINS = (1, 0, 2)


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _ce(row, k):
    return -(row[k] - math.log(sum(math.exp(v) for v in row)))


def _expect(row):
    return sum(p * c for p, c in zip(_softmax(row), CENTRES))


def _logits():
    return jnp.asarray([LOGITS], jnp.float32)


def _angles():
    return jnp.asarray([ANGLES], jnp.float32)


# --- hand-computed values -----------------------------------------------------------


def test_binned_ce_hand():
    # yaw: -(2 - log(e + e^2 + e^3)); pitch: log 3; roll: -(-1 - log(e^2 + 1 + e^-1)).
    expected = (
        -(2 - math.log(math.e + math.e**2 + math.e**3))
        + math.log(3)
        + -(-1 - math.log(math.e**2 + 1 + math.exp(-1)))
    )
    assert expected == pytest.approx(sum(_ce(r, k) for r, k in zip(LOGITS, BINS)))
    got = losses.binned_ce(_logits(), _angles(), lo=LO, hi=HI)
    assert got.shape == (1,)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_expectation_mse_hand():
    # pitch: uniform softmax -> expectation (-2 + 0 + 2) / 3 = 0, error (0 - -3)^2 = 9.
    assert _expect(LOGITS[1]) == pytest.approx(0.0)
    expected = sum((_expect(r) - a) ** 2 for r, a in zip(LOGITS, ANGLES))
    got = losses.expectation_mse(_logits(), _angles(), lo=LO, hi=HI)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_hopenet_loss_hand():
    ce = sum(_ce(r, k) for r, k in zip(LOGITS, BINS))
    mse = sum((_expect(r) - a) ** 2 for r, a in zip(LOGITS, ANGLES))
    got = losses.hopenet_loss(_logits(), _angles(), alpha=0.5, lo=LO, hi=HI)
    np.testing.assert_allclose(got, [ce + 0.5 * mse], rtol=1e-6)


def test_gld_target_hand_both_modes():
    # sigma = 1, true angle in bin 0 (a = 0): l - a = 0, 1, 2.
    gauss = [1.0, math.exp(-0.5), math.exp(-2.0)]
    paper = _softmax([g / 1.0 for g in gauss])  # Eq. 1-3: softmax of gaussian / sigma
    normed = [g / sum(gauss) for g in gauss]
    angles = jnp.asarray([[-2.5, -2.5, -2.5]])
    got_paper = losses.gld_target(angles, num_bins=3, lo=LO, hi=HI, sigma=1.0, normalized=False)
    got_norm = losses.gld_target(angles, num_bins=3, lo=LO, hi=HI, sigma=1.0)  # the default
    assert got_paper.shape == (1, 3, 3)
    np.testing.assert_allclose(got_paper[0, 0], paper, rtol=1e-6)
    np.testing.assert_allclose(got_norm[0, 0], normed, rtol=1e-6)
    # sigma = 2, angle in the middle bin: g = exp(-1/8) / 2 on both sides.
    side = math.exp(-1 / 8)
    expected = _softmax([side / 2, 1 / 2, side / 2])
    got = losses.gld_target(jnp.zeros((1, 3)), num_bins=3, lo=LO, hi=HI, sigma=2.0, normalized=False)
    np.testing.assert_allclose(got[0, 1], expected, rtol=1e-6)


@pytest.mark.parametrize("normalized", [False, True])
def test_gld_target_sums_to_one_and_peaks_at_true_bin(normalized):
    angles = jax.random.uniform(jax.random.key(0), (16, 3), minval=-99.0, maxval=99.0)
    target = losses.gld_target(angles, normalized=normalized)
    assert target.shape == (16, 3, 66)
    np.testing.assert_allclose(target.sum(-1), 1.0, rtol=1e-5)
    true_bin = np.floor((np.asarray(angles) + 99.0) / 3.0).clip(0, 65)
    np.testing.assert_array_equal(np.argmax(np.asarray(target), -1), true_bin)


def test_gld_paper_mode_is_flat_normalized_is_not():
    # Docstring numbers: K=66, sigma=4, a=33 (angle 0).
    paper = losses.gld_target(jnp.zeros((1, 3)), normalized=False)[0, 0]
    normed = losses.gld_target(jnp.zeros((1, 3)))[0, 0]
    assert float(paper.max()) == pytest.approx(0.01868, abs=1e-5)
    assert float(normed.max()) == pytest.approx(0.09974, abs=1e-5)


@pytest.mark.parametrize("normalized", [False, True])
def test_gld_loss_hand(normalized):
    sigma = 1.0
    gauss_rows = {0: [1.0, math.exp(-0.5), math.exp(-2.0)],
                  1: [math.exp(-0.5), 1.0, math.exp(-0.5)],
                  2: [math.exp(-2.0), math.exp(-0.5), 1.0]}
    expected = 0.0
    for row, k in zip(LOGITS, BINS):
        g = gauss_rows[k]
        d = [v / sum(g) for v in g] if normalized else _softmax([v / sigma for v in g])
        f = _softmax(row)
        euclid = math.sqrt(sum((di - fi) ** 2 for di, fi in zip(d, f)))
        kl = sum(di * math.log(di / fi) for di, fi in zip(d, f))
        expected += euclid + kl
    mse = sum((_expect(r) - a) ** 2 for r, a in zip(LOGITS, ANGLES))
    got = losses.gld_loss(_logits(), _angles(), sigma=sigma, normalized=normalized, lo=LO, hi=HI)
    np.testing.assert_allclose(got, [expected], rtol=1e-5)
    got = losses.gld_loss(
        _logits(), _angles(), alpha=0.3, sigma=sigma, normalized=normalized, lo=LO, hi=HI
    )
    np.testing.assert_allclose(got, [expected + 0.3 * mse], rtol=1e-5)


def test_gld_default_is_the_normalised_target():
    angles = jnp.asarray([[10.0, -20.0, 30.0]])
    np.testing.assert_array_equal(losses.gld_target(angles), losses.gld_target(angles, normalized=True))
    logits = _logits()
    np.testing.assert_array_equal(losses.gld_loss(logits, _angles(), lo=LO, hi=HI),
                                  losses.gld_loss(logits, _angles(), normalized=True, lo=LO, hi=HI))


def test_mse_loss_hand():
    pred = jnp.asarray([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    angles = jnp.asarray([[3.0, -2.0, -0.5], [1.0, -1.0, 2.0]])
    # (1-3)^2 + 0 + (0.5+0.5)^2 = 5;  1 + 1 + 4 = 6.
    np.testing.assert_allclose(losses.mse_loss(pred, angles), [5.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(jax.jit(losses.mse_loss)(pred, angles), [5.0, 6.0], rtol=1e-6)
    # d/dpred sum = 2 (pred - angles)
    grad = jax.grad(lambda p: losses.mse_loss(p, angles).sum())(pred)
    np.testing.assert_allclose(grad, 2 * (pred - angles), rtol=1e-6)
    # Registered on the "pose" output (degrees): any model can regress directly.
    assert losses.LOSSES["mse"].output_key == "pose" and losses.LOSSES["mse"].unit == "degrees"
    _, parts = losses.total_loss({"pose": pred}, angles, [("mse", 1.0, {})])
    assert float(parts["mse"]) == pytest.approx(5.5)


def test_reduction_sum_and_mean_hand():
    pred = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    angles = jnp.zeros((4, 3))
    outputs = {"pose": pred}  # per-example mae 1, 2, 3, 4; mse 1, 4, 9, 16
    terms = [("mae", 0.5, {"reduction": "sum"}), ("mse", 2.0, {"reduction": "mean"})]
    total, parts = jax.jit(lambda o, a: losses.total_loss(o, a, terms))(outputs, angles)
    assert float(parts["mae"]) == pytest.approx(10.0)  # 1 + 2 + 3 + 4
    assert float(parts["mse"]) == pytest.approx(7.5)  # (1 + 4 + 9 + 16) / 4
    assert float(total) == pytest.approx(0.5 * 10.0 + 2.0 * 7.5)
    # GLD as the paper's Eq. 5: sum over the batch of L_Eu + L_KL, plus alpha times the mean L_MSE.
    logits = jnp.concatenate([_logits(), jnp.zeros((1, 3, 3))])
    labels = jnp.concatenate([_angles(), jnp.zeros((1, 3))])
    per_example = losses.gld_loss(logits, labels, lo=LO, hi=HI)
    mse = losses.expectation_mse(logits, labels, lo=LO, hi=HI)
    paper = [("gld", 1.0, {"reduction": "sum", "lo": LO, "hi": HI}), ("expectation_mse", 0.3, {"lo": LO, "hi": HI})]
    total, _ = losses.total_loss({"logits": logits}, labels, paper)
    assert float(total) == pytest.approx(float(per_example[0] + per_example[1] + 0.3 * (mse[0] + mse[1]) / 2), rel=1e-6)
    # jaxpose's mean-reduced alpha equals the paper's alpha divided by the batch size.
    mean_form = [("gld", 1.0, {"lo": LO, "hi": HI}), ("expectation_mse", 0.3 / 2, {"lo": LO, "hi": HI})]
    assert float(losses.total_loss({"logits": logits}, labels, mean_form)[0]) == pytest.approx(float(total) / 2, rel=1e-6)
    assert "reduction" in losses.LOSSES["gld"].options()
    # Per-device steps average over devices: with axis_name, a "sum" term still sums the global batch.
    shards = jax.tree.map(lambda x: x.reshape(2, 2, *x.shape[1:]), (outputs, angles))

    def per_device(o, a):
        return jax.lax.pmean(losses.total_loss(o, a, terms, axis_name="devices"), "devices")

    total, parts = jax.vmap(per_device, axis_name="devices")(*shards)
    assert float(parts["mae"][0]) == pytest.approx(10.0) and float(parts["mse"][0]) == pytest.approx(7.5)
    assert float(total[0]) == pytest.approx(0.5 * 10.0 + 2.0 * 7.5)
    with pytest.raises(ValueError, match=r"'mae': unknown reduction 'max'; valid: mean, sum"):
        losses.total_loss(outputs, angles, [("mae", 1.0, {"reduction": "max"})])


def test_gld_loss_zero_when_prediction_equals_target():
    angles = jnp.asarray([[10.0, -20.0, 30.0]])
    logits = jnp.log(losses.gld_target(angles, normalized=True))
    got = losses.gld_loss(logits, angles, normalized=True)
    assert float(got[0]) == pytest.approx(0.0, abs=1e-5)
    grad = jax.grad(lambda x: losses.gld_loss(x, angles, normalized=True).sum())(logits)
    assert np.all(np.isfinite(grad))


def test_mae_loss_hand():
    pred = jnp.asarray([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]])
    true = jnp.asarray([[2.0, 2.0, 2.0], [-1.5, 0.5, 0.0]])
    # |1-2| + |-2-2| + |3-2| = 6; 1.5 + 0.5 + 0 = 2.
    np.testing.assert_allclose(losses.mae_loss(pred, true), [6.0, 2.0])


def test_ranking_loss_hand():
    t1 = jnp.asarray([[10.0, 0.0, -5.0]])
    t2 = jnp.asarray([[20.0, 0.0, -10.0]])
    y1 = jnp.asarray([[1.0, 2.0, 3.0]])
    y2 = jnp.asarray([[0.0, 5.0, 1.0]])
    # yaw: sgn(+10) = 1, max(0, -(0 - 1)) = 1; pitch: tie -> 0;
    # roll: sgn(-5) = -1, max(0, +(1 - 3)) = 0.
    np.testing.assert_allclose(losses.ranking_loss(y1, y2, t1, t2), [1.0])


def test_ranking_loss_zero_when_orders_agree_linear_otherwise():
    t1 = jnp.asarray([[0.0, 0.0, 0.0]])
    t2 = jnp.asarray([[10.0, -10.0, 5.0]])
    y1 = jnp.zeros((1, 3))
    agree = jnp.asarray([[3.0, -7.0, 0.5]])
    assert float(losses.ranking_loss(y1, agree, t1, t2)[0]) == 0.0
    for gap in (1.0, 2.0, 4.0):
        wrong = jnp.asarray([[-gap, gap, -gap]])  # every angle in the wrong order by `gap`
        assert float(losses.ranking_loss(y1, wrong, t1, t2)[0]) == pytest.approx(3 * gap)


def test_rankpose_loss_hand():
    t1 = jnp.asarray([[0.1, 0.2, 0.3]])
    t2 = jnp.asarray([[0.2, 0.1, 0.3]])
    y1 = jnp.asarray([[0.0, 0.0, 0.0]])
    y2 = jnp.asarray([[-0.1, 0.4, 0.3]])
    mse = (0.01 + 0.04 + 0.09) + (0.09 + 0.09 + 0.0)
    # yaw: order +, pred diff -0.1 -> 0.1; pitch: order -, pred diff 0.4 -> 0.4; roll tie -> 0.
    rank = 0.1 + 0.4
    got = losses.rankpose_loss(y1, y2, t1, t2, beta=0.25)
    np.testing.assert_allclose(got, [0.25 * mse + 0.75 * rank], rtol=1e-6)


def test_hybrid_loss_hand():
    fine = LOGITS  # 3 bins over [-3, 3]
    coarse = [[0.0, 1.0], [1.0, -1.0], [0.5, 0.5]]  # 2 bins: [-3, 0), [0, 3]
    coarse_bins = (1, 0, 1)  # 0.5, -3.0, 2.9
    ce_fine = sum(_ce(r, k) for r, k in zip(fine, BINS))
    ce_coarse = sum(_ce(r, k) for r, k in zip(coarse, coarse_bins))
    mse = sum((_expect(r) - a) ** 2 for r, a in zip(fine, ANGLES))
    got = losses.hybrid_loss(
        (_logits(), jnp.asarray([coarse])), _angles(), betas=(2.0, 3.0), alpha=0.5, lo=LO, hi=HI
    )
    np.testing.assert_allclose(got, [2.0 * ce_fine + 3.0 * ce_coarse + 0.5 * mse], rtol=1e-6)


def test_hybrid_one_granularity_equals_hopenet():
    logits = 3.0 * jax.random.normal(jax.random.key(1), (5, 3, 66))
    angles = jax.random.uniform(jax.random.key(2), (5, 3), minval=-99.0, maxval=99.0)
    hybrid = losses.hybrid_loss((logits,), angles, betas=(1.0,), alpha=2.0)
    np.testing.assert_allclose(hybrid, losses.hopenet_loss(logits, angles, alpha=2.0), rtol=1e-6)


def test_hybrid_betas_must_match():
    with pytest.raises(ValueError, match="2 granularities of logits but 5 betas"):
        losses.hybrid_loss((_logits(), _logits()), _angles())


def test_binned_shape_error():
    with pytest.raises(ValueError, match=r"binned_ce: logits must have shape \(B, 3, K\)"):
        losses.binned_ce(jnp.zeros((2, 66)), jnp.zeros((2, 3)))


# --- jit, gradients, dtypes ----------------------------------------------------------

K = 66
_KEY_L, _KEY_A = jax.random.key(3), jax.random.key(4)
_ANG = jax.random.uniform(_KEY_A, (4, 3), minval=-99.0, maxval=99.0)
_PAIR = [jax.random.normal(jax.random.key(i), (2, 3)) for i in range(10, 14)]

BINNED = {
    "binned_ce": losses.binned_ce,
    "expectation_mse": losses.expectation_mse,
    "hopenet": losses.hopenet_loss,
    "gld": losses.gld_loss,
    "gld_paper_target": lambda x, a: losses.gld_loss(x, a, normalized=False, alpha=0.1),
    "hybrid_single": lambda x, a: losses.hybrid_loss((x,), a, betas=(1.0,)),
}


@pytest.mark.parametrize("name", sorted(BINNED))
def test_binned_jit_equals_eager_and_grad_finite(name):
    fn = BINNED[name]
    logits = 2.0 * jax.random.normal(_KEY_L, (4, 3, K))
    eager = fn(logits, _ANG)
    assert eager.shape == (4,)
    np.testing.assert_allclose(jax.jit(fn)(logits, _ANG), eager, rtol=1e-5)
    for x in (logits, jnp.where(logits > 0, 1e4, -1e4), logits.astype(jnp.bfloat16)):
        value, grad = jax.value_and_grad(lambda z: fn(z, _ANG).sum())(x)
        assert np.isfinite(float(value)), (name, x.dtype)
        assert np.all(np.isfinite(np.asarray(grad, np.float32))), (name, x.dtype)


def test_bf16_logits_computed_in_float32():
    logits = 2.0 * jax.random.normal(_KEY_L, (4, 3, K))
    bf16 = logits.astype(jnp.bfloat16)
    got = losses.hopenet_loss(bf16, _ANG)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, losses.hopenet_loss(bf16.astype(jnp.float32), _ANG), rtol=1e-6)


def test_hybrid_jit_and_grad():
    sizes = (198, 66, 18, 6, 2)
    logits = tuple(jax.random.normal(jax.random.key(k), (4, 3, n)) for k, n in enumerate(sizes))
    eager = losses.hybrid_loss(logits, _ANG)
    np.testing.assert_allclose(jax.jit(losses.hybrid_loss)(logits, _ANG), eager, rtol=1e-5)
    grads = jax.jit(jax.grad(lambda x: losses.hybrid_loss(x, _ANG).sum()))(logits)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("fn", [losses.ranking_loss, losses.rankpose_loss])
def test_pairwise_jit_equals_eager_and_grad_finite(fn):
    eager = fn(*_PAIR)
    np.testing.assert_allclose(jax.jit(fn)(*_PAIR), eager, rtol=1e-6)

    def objective(p1, p2):
        return fn(p1, p2, _PAIR[2], _PAIR[3]).sum()

    grads = jax.grad(objective, argnums=(0, 1))(_PAIR[0], _PAIR[1])
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_mae_jit_and_grad():
    pred = jax.random.normal(jax.random.key(5), (4, 3))
    eager = losses.mae_loss(pred, _ANG)
    np.testing.assert_allclose(jax.jit(losses.mae_loss)(pred, _ANG), eager, rtol=1e-6)
    assert np.all(np.isfinite(jax.grad(lambda p: losses.mae_loss(p, _ANG).sum())(pred)))


# --- registry ------------------------------------------------------------------------


def _fake_outputs(batch=4):
    keys = jax.random.split(jax.random.key(6), 8)
    multi = tuple(jax.random.normal(keys[i], (batch, 3, n)) for i, n in enumerate((198, 66, 18, 6, 2)))
    return {
        "logits": multi[1],
        "logits_multi": multi,
        "regression": jnp.clip(jax.random.normal(keys[5], (batch, 3)), -1.5, 1.5),
        "pose": 30.0 * jax.random.normal(keys[6], (batch, 3)),
        "rotation": angles.rotation_6d_to_matrix(jax.random.normal(keys[7], (batch, 6))),
        "quaternion": jax.random.normal(keys[7], (batch, 4)),  # the loss normalises it
    }


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_every_registered_loss_runs(name):
    outputs = _fake_outputs()
    total, parts = losses.total_loss(outputs, _ANG, [(name, 2.0, {})])
    assert total.shape == () and np.isfinite(float(total))
    assert set(parts) == {name}
    np.testing.assert_allclose(total, 2.0 * parts[name], rtol=1e-6)
    grad = jax.grad(lambda o: losses.total_loss(o, _ANG, [(name, 1.0, {})])[0])(outputs)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_get_loss_unknown_lists_names():
    with pytest.raises(ValueError) as info:
        losses.get_loss("focal")
    message = str(info.value)
    assert "'focal'" in message
    for name in losses.LOSSES:
        assert name in message


def test_missing_output_key_error():
    outputs = {"pose": jnp.zeros((4, 3)), "regression": jnp.zeros((4, 3))}
    expected = r"'hopenet' needs model output 'logits'.*\['pose', 'regression'\]"
    with pytest.raises(ValueError, match=expected):
        losses.total_loss(outputs, _ANG, [("hopenet", 1.0, {})])


def test_unknown_option_error():
    with pytest.raises(ValueError, match=r"'mae': unknown option\(s\) \['alpha'\]"):
        losses.total_loss(_fake_outputs(), _ANG, [("mae", 1.0, {"alpha": 1.0})])


def test_config_terms_weighted_sum_and_kwargs():
    outputs = _fake_outputs()
    terms = [("gld", 1.0, {"alpha": 0.1}), ("mae", 0.1, {})]
    total, parts = losses.total_loss(outputs, _ANG, terms)
    gld = float(jnp.mean(losses.gld_loss(outputs["logits"], _ANG, alpha=0.1)))
    mae = float(jnp.mean(losses.mae_loss(outputs["pose"], _ANG)))
    assert float(parts["gld"]) == pytest.approx(gld, rel=1e-6)
    assert float(parts["mae"]) == pytest.approx(mae, rel=1e-6)
    assert float(total) == pytest.approx(gld + 0.1 * mae, rel=1e-6)
    # lo/hi pass through kwargs: 3 bins over [-3, 3] on the hand-computed example.
    ce = sum(_ce(r, k) for r, k in zip(LOGITS, BINS))
    mse = sum((_expect(r) - a) ** 2 for r, a in zip(LOGITS, ANGLES))
    terms = [("hopenet", 1.0, {"alpha": 2.0, "lo": LO, "hi": HI})]
    total, _ = losses.total_loss({"logits": _logits()}, _angles(), terms)
    assert float(total) == pytest.approx(ce + 2.0 * mse, rel=1e-6)


def test_total_loss_jit_and_repeated_names():
    outputs = _fake_outputs()
    terms = [("mae", 1.0, {}), ("mae", 0.5, {})]
    fn = jax.jit(lambda o, a: losses.total_loss(o, a, terms))
    total, parts = fn(outputs, _ANG)
    assert set(parts) == {"mae", "mae_1"}
    assert float(total) == pytest.approx(1.5 * float(parts["mae"]), rel=1e-6)


def test_pairwise_split_halves_and_radians():
    # Batch of 4 = pairs (0, 2) and (1, 3). Labels in degrees become radians.
    labels = jnp.asarray([[0.0, 0.0, 0.0], [90.0, 0.0, 0.0], [180.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    regression = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    outputs = {"regression": regression}
    # Pair (0, 2): true yaw rises (0 -> pi), prediction falls (0 -> -1): hinge 1.
    # Pair (1, 3): true yaw falls (pi/2 -> 0), prediction rises (0 -> 2): hinge 2.
    # An interleaved split, pairs (0, 1) and (2, 3), would give per-pair [0, 3].
    _, parts = losses.total_loss(outputs, labels, [("ranking", 1.0, {})])
    assert float(parts["ranking"]) == pytest.approx((1.0 + 2.0) / 2)
    np.testing.assert_allclose(losses.term_values("ranking", outputs, labels), [1.0, 2.0])
    # beta = 1: pure squared error in radians, per pair.
    mse_pair0 = (0.0 - 0.0) ** 2 + (math.pi - -1.0) ** 2
    mse_pair1 = (math.pi / 2 - 0.0) ** 2 + (0.0 - 2.0) ** 2
    values = losses.term_values("rankpose", outputs, labels, {"beta": 1.0})
    np.testing.assert_allclose(values, [mse_pair0, mse_pair1], rtol=1e-6)


def test_pairwise_needs_even_batch():
    outputs = {"regression": jnp.zeros((3, 3))}
    with pytest.raises(ValueError, match="'rankpose' is pairwise: needs an even batch"):
        losses.total_loss(outputs, jnp.zeros((3, 3)), [("rankpose", 1.0, {})])


def test_bad_term_spec():
    with pytest.raises(ValueError, match="must be \\(name, weight\\)"):
        losses.total_loss(_fake_outputs(), _ANG, ["mae"])
    with pytest.raises(ValueError, match="no loss terms"):
        losses.total_loss(_fake_outputs(), _ANG, [])
