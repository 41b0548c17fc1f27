"""MCA and MMCA: the batched E- and M-step against a brute-force evaluation.

The brute force loops explicitly over data points and all 2^H states and implements the
ρ-smoothed objective of MODELS.md section 2 from its definition, independently of the
vectorised kernels in prosper/models/mca.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import prosper.models.mca as mca_module
from prosper import MCA, MMCA
from prosper.data import bars
from prosper.models.base import binomial_truncation
from prosper.models.mca import MCAModel, MMCAModel
from prosper.solvers.states import ExpectationTruncation


def rho_of(T: float, signed: bool) -> float:
    if signed:
        Tp = max(T, 1.2)
        return min(Tp / (Tp - 1.0), 35.0)
    Tp = max(T, 1.05)
    return Tp / (Tp - 1.0)


def brute_force(Y, W, pi, sigma, beta, signed, mask=None, summed=False):
    """Log marginals and statistics by explicit loops over points and all 2^H states
    (``summed``: MMCA's signed sum of the first half of the iterations)."""
    N, D = Y.shape
    H = W.shape[1]
    rho = rho_of(1.0 / beta, signed)
    states = [np.array(s, dtype=float) for s in itertools.product([0, 1], repeat=H)]
    lm = np.zeros(N)
    Ay, A, counts, err, n = np.zeros((D, H)), np.zeros((D, H)), 0.0, 0.0, 0.0
    lost, lost_to, lost_y = np.zeros((D, H)), np.zeros((D, H)), np.zeros((D, H))
    for i in range(N):
        y = Y[i]
        lj, lj_beta, wbars, As, Cs = [], [], [], [], []
        for s in states:
            k = int(s.sum())
            wbar = np.zeros(D)
            Ad = np.zeros((D, H))
            Cd = np.zeros((D, H))  # MMCA: closeness where the sign of h loses
            if k == 1:
                h = int(np.flatnonzero(s)[0])
                wbar = W[:, h].copy()
                Ad[:, h] = 1.0
            elif k >= 2:
                for d in range(D):
                    if summed:
                        t = sum(np.sign(W[d, h]) * abs(W[d, h]) ** rho for h in range(H) if s[h])
                        wbar[d] = np.sign(t) * abs(t) ** (1.0 / rho)
                    elif signed:
                        # the ρ-smoothed maxima of each sign; the larger wins with its sign
                        t_pos = sum(W[d, h] ** rho for h in range(H) if s[h] and W[d, h] > 0)
                        t_neg = sum((-W[d, h]) ** rho for h in range(H) if s[h] and W[d, h] < 0)
                        win = 1.0 if t_pos >= t_neg else -1.0
                        wbar[d] = win * max(t_pos, t_neg) ** (1.0 / rho)
                    else:
                        wbar[d] = sum(W[d, h] ** rho for h in range(H) if s[h]) ** (1.0 / rho)
                    for h in range(H):
                        if s[h]:
                            ratio = abs(W[d, h]) / abs(wbar[d])
                            if summed:
                                Ad[d, h] = min(1.0, ratio) ** (rho - 1.0)
                            elif signed and np.sign(W[d, h]) != np.sign(wbar[d]):
                                Cd[d, h] = ratio**rho
                            else:
                                Ad[d, h] = ratio ** (rho - 1.0)
            ll = -0.5 * D * np.log(2 * np.pi * sigma**2) - np.sum((y - wbar) ** 2) / (2 * sigma**2)
            lp = k * np.log(pi) + (H - k) * np.log(1 - pi)
            lj.append(ll + lp)
            lj_beta.append(beta * (ll + lp))
            wbars.append(wbar)
            As.append(Ad)
            Cs.append(Cd * np.abs(wbar)[:, None])
        lj, lj_beta = np.array(lj), np.array(lj_beta)
        lm[i] = np.log(np.sum(np.exp(lj - lj.max()))) + lj.max()
        q = np.exp(lj_beta - lj_beta.max())
        q /= q.sum()
        w = 1.0 if mask is None else mask[i]
        for qk, s, wbar, Ad, Cd in zip(q, states, wbars, As, Cs, strict=True):
            Ay += w * qk * Ad * y[:, None]
            A += w * qk * Ad
            closeness = np.divide(Cd, np.abs(wbar)[:, None], out=np.zeros_like(Cd), where=Cd > 0)
            # the contested statistics count every point, selected (w = 1) or not
            lost += qk * closeness
            lost_y += qk * closeness * y[:, None]
            lost_to += qk * Cd
            counts += w * qk * s.sum()
            err += w * qk * np.sum((y - wbar) ** 2)
        n += w
    return lm, {
        "Ay": Ay,
        "A": A,
        "counts": counts,
        "err": err,
        "n": n,
        "lost": lost,
        "lost_to": lost_to,
        "lost_y": lost_y,
    }


def brute_mstep(st, W, pi, sigma, H, D, signed, gamma, summed=False):
    used = st["A"] > 1e-12 * st["n"]
    W_new = W.copy()
    W_new[used] = st["Ay"][used] / st["A"][used]
    if signed:
        inertia = np.maximum(1 - np.exp(-st["A"] / 2.5), 0.2)
        W_new = inertia * W_new + (1 - inertia) * W
        # in the second phase (not the signed sum), values whose data fit them less than
        # 4 nats (sparse_nats) better than 0 go to 0
        for d in range(D if not summed else 0):
            for h in range(H):
                nats = st["Ay"][d, h] ** 2 / (max(st["A"][d, h], 1e-300) * 2 * sigma**2)
                if nats < 4.0:
                    W_new[d, h] = -1e-4 if W_new[d, h] < 0 else 1e-4
        # where the sign lost: above the winners' mean magnitude if the contested data
        # favour that value by >= 10 nats, below it if they favour the winners' by as much
        # or the contested mass is >= 1
        for d, h in zip(*np.nonzero(st["lost"] > 0), strict=True):
            mass = st["lost"][d, h]
            winners = st["lost_to"][d, h] / mass
            datum = st["lost_y"][d, h] / mass
            sign = -1.0 if W_new[d, h] < 0 else 1.0
            up = sign * max(abs(W_new[d, h]), 1.02 * winners)
            nats = mass * ((datum + sign * winners) ** 2 - (datum - up) ** 2) / (2 * sigma**2)
            if nats >= 10.0:
                W_new[d, h] = up
            elif mass >= 1.0 or nats <= -10.0:
                W_new[d, h] = sign * min(abs(W_new[d, h]), 0.98 * winners)
        W_new = np.where(W_new < 0, np.minimum(W_new, -1e-4), np.maximum(W_new, 1e-4))
    else:
        W_new = np.maximum(W_new, 1e-4)
    Am, Bm = binomial_truncation(H, gamma, pi)
    pi_new = pi * H * Am / Bm * st["counts"] / (H * st["n"])
    sigma_new = np.sqrt(st["err"] / (st["n"] * D))
    return W_new, pi_new, sigma_new


def problem(signed, H=4, D=6, N=7, seed=0):
    rng = np.random.default_rng(seed)
    if signed:
        W = rng.uniform(0.3, 3.0, (D, H)) * rng.choice([-1.0, 1.0], (D, H))
        Y = rng.normal(0, 2.0, (N, D))
    else:
        W = rng.uniform(0.05, 3.0, (D, H))
        Y = rng.uniform(-0.5, 4.0, (N, D))
    return Y, {"W": W, "pi": np.asarray(0.3), "sigma": np.asarray(0.9)}


@pytest.mark.parametrize(
    ("model_cls", "summed"), [(MCAModel, False), (MMCAModel, False), (MMCAModel, True)]
)
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.2])
@pytest.mark.parametrize("with_mask", [False, True])
def test_full_enumeration_equals_brute_force(model_cls, summed, beta, with_mask):
    H, D = 4, 6
    signed = model_cls is MMCAModel
    Y, params = problem(signed, H, D)
    mask = np.array([1, 0, 1, 1, 0, 1, 1], dtype=float) if with_mask else None
    model = model_cls(H, D)
    model.signed_sum = summed
    states = ExpectationTruncation(H, H, H, model.values)
    lm, st = model.estep_batch(Y, states, params, beta, beta, mask, True, None)
    lm_ref, st_ref = brute_force(Y, params["W"], 0.3, 0.9, beta, signed, mask, summed)
    np.testing.assert_allclose(lm, lm_ref, rtol=1e-10, atol=1e-10)
    for key in ("Ay", "A", "lost", "lost_to", "lost_y") if signed else ("Ay", "A"):
        np.testing.assert_allclose(st[key], st_ref[key], rtol=1e-10, atol=1e-12, err_msg=key)
    for key in ("counts", "err", "n"):
        np.testing.assert_allclose(float(np.sum(st[key])), st_ref[key], rtol=1e-10, err_msg=key)
    new = model.mstep(st, params, H)
    W_ref, pi_ref, sigma_ref = brute_mstep(st_ref, params["W"], 0.3, 0.9, H, D, signed, H, summed)
    np.testing.assert_allclose(new["W"], W_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(new["pi"]), pi_ref, rtol=1e-10)
    np.testing.assert_allclose(float(new["sigma"]), sigma_ref, rtol=1e-10)


@pytest.mark.parametrize("model_cls", [MCAModel, MMCAModel])
def test_truncated_states_and_chunking(model_cls, monkeypatch):
    """With preselection (H' < H), sub-chunking must not change anything and the log
    marginals must equal the reference log_joint over the dense candidate states."""
    H, D = 6, 5
    signed = model_cls is MMCAModel
    Y, params = problem(signed, H, D, N=23, seed=3)
    model = model_cls(H, D)
    states = ExpectationTruncation(H, 4, 3, model.values)
    batch = states.select(model.preselection_scores(Y, params), Y.shape[0])
    lm, st = model.estep_batch(Y, states, params, 0.7, 0.7, None, True, None)
    ll, lp = model.log_joint(Y, batch.dense(), params, beta=0.7)
    lj = ll + lp
    ref = np.log(np.exp(lj - lj.max(1, keepdims=True)).sum(1)) + lj.max(1)
    np.testing.assert_allclose(lm, ref, rtol=1e-11)
    monkeypatch.setattr(mca_module, "CHUNK_ELEMENTS", 3 * batch.n_states * D)
    lm2, st2 = model.estep_batch(Y, states, params, 0.7, 0.7, None, True, None)
    np.testing.assert_allclose(lm2, lm, rtol=1e-12)
    for key in st:
        np.testing.assert_allclose(st2[key], st[key], rtol=1e-11, err_msg=key)
    mean = model.posterior_mean(Y, states, params, None)
    ll1, lp1 = model.log_joint(Y, batch.dense(), params, beta=1.0)
    q = np.exp(ll1 + lp1 - (ll1 + lp1).max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(mean, np.einsum("bk,bkh->bh", q, batch.dense()), atol=1e-12)


def test_preselection_scores():
    rng = np.random.default_rng(1)
    W = rng.uniform(0, 2, (5, 3))
    Y = rng.uniform(0, 2, (4, 5))
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(1.0)}
    expected = -np.array([[np.maximum(W[:, h] - y, 0).sum() for h in range(3)] for y in Y])
    np.testing.assert_allclose(MCAModel(3, 5).preselection_scores(Y, params), expected)
    Ws = W - 1.0
    params["W"] = Ws
    dist = np.array([[np.sum((Ws[:, h] - y) ** 2) for h in range(3)] for y in Y])
    scores = MMCAModel(3, 5).preselection_scores(Y, params)
    np.testing.assert_allclose(scores, -dist + np.sum(Y**2, axis=1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("elements", [1, 3 * 40 * 5, 1 << 15])
def test_mca_preselection_sums_each_pixel_in_order_whatever_the_buffer(monkeypatch, elements):
    """The scores do not depend on how many rows the buffer holds (1, 3 with a remainder,
    all): each (row, h) sums its pixels' excesses in ascending d, bit for bit."""
    monkeypatch.setattr(mca_module, "PRESELECTION_ELEMENTS", elements)
    rng = np.random.default_rng(2)
    W = rng.uniform(0, 2, (40, 5))
    Y = rng.uniform(0, 2, (10, 40))
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(1.0)}
    expected = np.zeros((10, 5))
    for d in range(40):
        expected += np.maximum(W[d][None, :] - Y[:, d, None], 0.0)
    scores = MCAModel(5, 40).preselection_scores(Y, params)
    np.testing.assert_array_equal(scores, -expected)


def test_rho_schedule():
    assert MCAModel(2, 2).rho(1.0) == pytest.approx(21.0)
    assert MMCAModel(2, 2).rho(1.0) == pytest.approx(6.0)
    assert MCAModel(2, 2).rho(0.2) == pytest.approx(1.25)
    assert MMCAModel(2, 2).rho(1.0 / 1.01) <= 35.0


def test_domains_and_sampling():
    rng = np.random.default_rng(0)
    mca, mmca = MCAModel(3, 4), MMCAModel(3, 4)
    W = np.array([[0.0, -1.0, 2.0]] * 4)
    assert (mca.clip_W(W) >= 1e-4).all()
    clipped = mmca.clip_W(W)
    assert (np.abs(clipped) >= 1e-4).all() and clipped[0, 1] == -1.0
    params = {"W": np.abs(W) + 1.0, "pi": np.asarray(0.5), "sigma": np.asarray(1e-9)}
    Y, S = mca.sample(50, params, rng)
    expected = np.max(S[:, None, :] * params["W"][None], axis=2)
    np.testing.assert_allclose(Y, expected, atol=1e-6)
    params["W"] = np.array([[1.0, -3.0, 2.0]] * 4)
    Y, S = mmca.sample(50, params, rng)
    both = S[:, 1] * S[:, 2] > 0
    assert np.allclose(Y[both], -3.0, atol=1e-6)
    noisy = mca.perturb(mca.init_params(np.ones(4), np.ones(4), rng, "data"), 0.5, rng)
    assert (noisy["W"] >= 1e-4).all()


@pytest.mark.parametrize("cls", [MCA, MMCA])
def test_bad_input(cls):
    Y = np.abs(np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(ValueError, match="H"):
        cls(H=0).fit(Y)
    with pytest.raises(ValueError, match="gamma"):
        cls(H=4, Hprime=3, gamma=4).fit(Y)
    with pytest.raises(ValueError, match="temperature"):
        cls(H=3, temperature=[[0, 0.5]]).fit(Y)
    with pytest.raises(ValueError):
        cls(H=3).fit(np.full((5, 4), np.nan))
    model = cls(H=3, Hprime=3, gamma=2, n_iter=2, random_state=0).fit(Y)
    with pytest.raises(ValueError):
        model.transform(Y[:, :3])
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "4"])
def test_mmca_sparse_nats_is_checked_before_any_work(bad):
    with pytest.raises(ValueError, match="sparse_nats"):
        MMCA(H=3, sparse_nats=bad).fit(np.ones((5, 4)))


def test_mmca_sparse_nats_reaches_the_m_step_and_the_result_file(tmp_path, monkeypatch):
    """``MMCA(sparse_nats=0)`` fits exactly as the model with the rule switched off, the
    default (None) as the model's 4 nats, the two differ, and a loaded result file keeps
    the setting."""
    from prosper import load

    data = bars(
        size=3,
        n_samples=200,
        pi=0.2,
        amplitude=5.0,
        sigma=1.0,
        signed=True,
        combine="max",
        random_state=1,
    )
    kwargs = {"H": 6, "Hprime": 4, "gamma": 2, "n_iter": 8, "random_state": 0}
    off = MMCA(sparse_nats=0.0, **kwargs).fit(data.Y, out=tmp_path / "off.h5")
    default = MMCA(**kwargs).fit(data.Y)
    assert not np.array_equal(off.W_, default.W_)
    with monkeypatch.context() as patch:
        patch.setattr(MMCAModel, "sparse_nats", 0.0)
        np.testing.assert_array_equal(MMCA(**kwargs).fit(data.Y).W_, off.W_)
    np.testing.assert_array_equal(MMCA(sparse_nats=4.0, **kwargs).fit(data.Y).W_, default.W_)
    loaded = load(tmp_path / "off.h5")
    assert loaded.sparse_nats == 0.0
    np.testing.assert_array_equal(loaded.W_, off.W_)


# -- the re-initialisation of unused and duplicate latents (reassignment_ratio) --------------


def test_reassigned_cause_holds_y_where_it_exceeds_the_reconstruction():
    """Under the maximum a new cause takes y's values (not y − W̄) where y lies more than σ
    above the reconstruction of the most probable state (MMCA: in magnitude), and the
    minimum elsewhere; the other columns stay."""
    W = np.full((6, 3), W_MIN := mca_module.W_MIN)
    W[:3, 0] = 10.0  # cause 0 covers pixels 0-2
    params = {"W": W, "pi": np.asarray(0.3), "sigma": np.asarray(1.0)}
    y = np.array([10.3, 9.8, 12.0, 9.5, 0.4, 10.2])  # pixel 2 and 3, 5 exceed W̄ by > σ
    new = MCAModel(H=3, D=6).reassigned(params, 2, y, np.array([0.9, 0.1, 0.0]))
    np.testing.assert_allclose(new["W"][:, 2], [W_MIN, W_MIN, 12.0, 9.5, W_MIN, 10.2])
    np.testing.assert_array_equal(new["W"][:, :2], W[:, :2])
    assert new["W"] is not W and W[2, 2] == W_MIN  # not modified in place
    # MMCA: a pixel is unexplained where |y| exceeds |W̄| by > σ, whatever the sign
    Ws = W.copy()
    Ws[:3, 0] = -10.0
    signed = {**params, "W": Ws}
    ys = np.array([-10.3, 12.0, -0.5, -9.5, 0.4, 10.2])
    new = MMCAModel(H=3, D=6).reassigned(signed, 1, ys, np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(new["W"][:, 1], [W_MIN, 12.0, W_MIN, -9.5, W_MIN, 10.2])
    # nothing unexplained: W unchanged
    same = MCAModel(H=3, D=6).reassigned(params, 2, W[:, 0], np.array([1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(same["W"], W)
    # W_h and −W_h are two causes of MMCA, not duplicates
    pair = np.array([[1.0, -1.0], [2.0, -2.0]])
    sim = MMCAModel(H=2, D=2).latent_similarity({"W": pair})
    np.testing.assert_allclose(sim, [[1.0, -1.0], [-1.0, 1.0]])


def test_latent_usage_counts_where_a_cause_holds_the_maximum():
    """usage_h = Σ_d <A>_dh W_dh² / ||W_h||: a bar's usage is how often it is on times its
    norm; a cause that is on only together with one that covers all its pixels more
    strongly wins nothing and counts as unused."""
    W = np.full((4, 3), mca_module.W_MIN)
    W[:2, 0] = 10.0
    W[2:, 1] = 10.0
    W[:2, 2] = 3.0  # inside cause 0's pixels, always beaten by it
    rng = np.random.default_rng(0)
    S = (rng.random((300, 3)) < 0.3).astype(float)
    S[:, 2] *= S[:, 0]  # cause 2 only ever on together with cause 0
    model = MCAModel(H=3, D=4)
    Y = model._combine(S, W) + 0.5 * rng.standard_normal((300, 4))
    params = {"W": W, "pi": np.asarray(0.3), "sigma": np.asarray(0.5)}
    states = ExpectationTruncation(3, 3, 3, model.values)
    from prosper.backends import get_backend

    _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, get_backend("numpy"))
    usage = model.latent_usage(stats)
    assert usage[2] < 0.01 * min(usage[0], usage[1])
    np.testing.assert_allclose(usage[:2], S[:, :2].sum(axis=0) * np.sqrt(200.0), rtol=0.05)
    # a column decayed to near 0 changes nothing, on or off: unused whatever <s_h>
    params["W"] = W.copy()
    params["W"][:, 2] = 0.05
    _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, get_backend("numpy"))
    usage = model.latent_usage(stats)
    assert usage[2] < 0.01 * min(usage[0], usage[1])


@pytest.mark.parametrize("estimator", [MCA, MMCA])
def test_an_unused_cause_takes_what_the_maximum_leaves_unexplained(estimator):
    """5x5 bars combined by the maximum (MMCA: a fixed sign per bar) whose latent 0 is
    replaced by a column no point can use: with the defaults the check of iteration 5 gives
    it the values of the spare (poorly explained) point where they exceed the
    reconstruction of its most probable state; the M-step is otherwise unchanged. Before
    session 7 MCA and MMCA never re-initialised a latent."""
    from prosper.backends import get_backend
    from prosper.parallel import Communicator
    from prosper.solvers.truncated import REASSIGN_EVERY

    signed = estimator is MMCA
    data = bars(size=5, n_samples=400, pi=0.2, amplitude=10.0, sigma=2.0, random_state=3)
    W_true = data.W * (np.where(np.arange(10) % 2 == 0, 1.0, -1.0) if signed else 1.0)
    model = (MMCAModel if signed else MCAModel)(H=10, D=25)
    Y = model._combine(data.S, W_true)
    Y += 2.0 * np.random.default_rng(3).standard_normal(Y.shape)
    W = W_true.copy()
    W[:, 0] = 50.0  # sticks out above every point: never preselected, never on
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}
    settings = {"H": 10, "Hprime": 6, "gamma": 3, "n_iter": 40, "temperature": 1.0}
    learners = []
    for ratio in (None, 0.0):  # the default, and switched off
        est = estimator(**settings, backend="numpy", reassignment_ratio=ratio)
        learner = est._make_learner(25, 0, get_backend("numpy"))
        learner.set_params(params, Y.shape[0])
        stats = learner.estep(Y, Communicator(None), REASSIGN_EVERY)
        spare = learner._spare
        learners.append((learner, learner.mstep(stats, REASSIGN_EVERY), spare))
    (on, metrics, spare), (off, off_metrics, _) = learners
    assert metrics["reassigned"] == 0 and "reassigned" not in off_metrics
    np.testing.assert_array_equal(on.params["W"][:, 1:], off.params["W"][:, 1:])
    y, mean_s = spare
    mask = model.unexplained(off.params, y, mean_s)
    assert mask.any() and not mask.all()
    expected = model.clip_W(np.where(mask, y, 0.0))
    np.testing.assert_array_equal(on.params["W"][:, 0], expected)


# -- opposite signs of equal magnitude (the ties of the bars data) ---------------------------


def test_mmca_learns_the_magnitude_of_an_opposite_sign_tie():
    """Two causes, +10 on pixels 0-2 and −10 on pixels 2-4, cross at pixel 2 where the data
    show the first one's value (the tie rule of the bars generator). Started at the
    generating parameters, 30 EM iterations must keep both magnitudes near 10 with the
    winner of the data (cause 0) above the loser, and σ at 0.5. The signed ρ-smoothed
    maximum of the original MMCA cancelled ±10 to 0 where both are on: here it ended with
    the loser above the winner (9.98 against 9.96) and σ = 2.03 (on the bars, fitted from
    the data, the loser's crossing pixels came out at 6-9.5)."""
    from prosper.backends import get_backend

    W_true = np.zeros((5, 2))
    W_true[:3, 0] = 10.0
    W_true[2:, 1] = -10.0
    rng = np.random.default_rng(0)
    S = (rng.random((400, 2)) < 0.5).astype(float)
    clean = S @ W_true.T  # the sum is the maximum except at the crossing
    clean[:, 2] = np.where(S[:, 0] > 0, 10.0, -10.0 * S[:, 1])
    Y = clean + 0.5 * rng.standard_normal(clean.shape)
    model = MMCAModel(H=2, D=5)
    states = ExpectationTruncation(2, 2, 2, model.values)
    params = {"W": W_true, "pi": np.asarray(0.5), "sigma": np.asarray(0.5)}
    for _ in range(30):
        _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, get_backend("numpy"))
        params = model.mstep(stats, params, 2)
    W = params["W"]
    # the loser stays 2 % (tie_margin) below the winner
    assert 9.8 < W[2, 0] < 10.2 and -10.0 < W[2, 1] < -9.5, W[2]
    assert abs(W[2, 1]) < abs(W[2, 0])  # the data's winner keeps the larger magnitude
    np.testing.assert_allclose(W[[0, 1, 3, 4]], W_true[[0, 1, 3, 4]], atol=0.2)
    assert float(params["sigma"]) < 0.6


def _crossing(shown: int, n_empty: int):
    """MMCA's crossing of causes 0 (+9.8, pixels 0-1) and 1 (−10.2, pixels 0 and 2-7) at
    pixel 0: one point with both on, whose pixel 0 shows cause ``shown``'s value, 40 points
    of cause 0, 80 of cause 1 and ``n_empty`` empty ones; the generating parameters."""
    W = np.zeros((8, 2))
    W[:2, 0] = 9.8
    W[[0, 2, 3, 4, 5, 6, 7], 1] = -10.2
    Y = np.zeros((121 + n_empty, 8))
    Y[0] = W[:, 0] + W[:, 1]
    Y[0, 0] = W[0, shown]
    Y[1:41] = W[:, 0]
    Y[41:121] = W[:, 1]
    W = np.where(W == 0, 1e-4, W)
    return Y, {"W": W, "pi": np.asarray(0.4), "sigma": np.asarray(2.0)}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shown", [0, 1])
def test_mmca_mstep_lets_the_data_set_the_order_of_a_tie(backend, shown):
    """Causes 0 (+, pixels 0-1) and 1 (−, pixels 0 and 2-7) cross at pixel 0, cause 1 above
    (10.2 against 9.8): one point has both on and shows cause ``shown``'s value there (its
    contested mass, below ``lost_min``, capped nothing before). Where it shows cause 0's,
    the M-step lets cause 0 overtake; before, cause 0 kept the mean of its own points, 9.8,
    and cause 1 its own with the point, 9.95, and the wrong order stayed. Where it shows
    cause 1's, cause 0 stays below."""
    if backend == "numba":
        pytest.importorskip("numba")
    from prosper.backends import get_backend

    Y, params = _crossing(shown, n_empty=20)
    model = MMCAModel(H=2, D=8)
    model.start_iteration(99, 100)  # the second phase: the maximum of the two signs
    states = ExpectationTruncation(2, 2, 2, model.values)
    _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, get_backend(backend))
    assert 0.5 < stats["lost"][0, 0] < model.lost_min  # the one point, c = (9.8/10.2)^6
    new = model.mstep(stats, params, 2)["W"]
    # cause 1 wins the point: its mean, pulled down by the point where that shows +9.8
    assert abs(new[0, 1]) == pytest.approx((80 * 10.2 - Y[0, 0]) / 81, rel=1e-6)
    if shown == 0:
        assert abs(new[0, 0]) == pytest.approx(1.02 * 10.2, rel=1e-3)  # just above the winner
    else:
        assert abs(new[0, 0]) < abs(new[0, 1])
    np.testing.assert_allclose(new[1:], params["W"][1:], atol=1e-3)  # nothing else moves


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_mmca_order_counts_a_point_the_data_selection_cut(backend, path):
    """The setting above with the one contested point cut by ET's data selection (mask 0,
    as the fit of seed 4 at 10x10 had it: its log marginal ranked 2nd lowest of 2000). The
    contested statistics still count it, so cause 0 overtakes; before, they were masked
    like the rest and the wrong order stayed. The W update does not count it: cause 1
    keeps the mean of its own 80 points."""
    if backend == "numba":
        pytest.importorskip("numba")
    from prosper.backends import get_backend
    from prosper.backends.numpy_backend import log_normalise

    Y, params = _crossing(0, n_empty=0)
    mask = np.ones(Y.shape[0])
    mask[0] = 0.0
    model = MMCAModel(H=2, D=8)
    model.start_iteration(99, 100)
    states = ExpectationTruncation(2, 2, 2, model.values)
    kernels = get_backend(backend)
    if path == "fused":
        _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, mask, True, kernels)
    else:
        X = model.candidates(Y, states, params).indices()
        ll, lp = model.state_scorer(Y, params, kernels)[1](X)
        stats = model.state_stats(Y, X, log_normalise(ll + lp)[1], mask, params, kernels)
    assert float(stats["n"]) == 120
    assert 0.5 < stats["lost"][0, 0] < model.lost_min
    new = model.mstep(stats, params, 2)["W"]
    assert abs(new[0, 1]) == pytest.approx(10.2, rel=1e-9)
    assert abs(new[0, 0]) == pytest.approx(1.02 * 10.2, rel=1e-3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("sparse_nats", [0.0, 2.0])
def test_mmca_mstep_sets_values_the_data_do_not_show_to_zero(backend, sparse_nats):
    """Cause 0 (+10, pixels 0-1) alone in 40 points whose pixels 2-3 are noise of mean 0.3
    and 0.9 at σ = 2: its values there gain 40 · 0.3² / 8 = 0.45 and 40 · 0.9² / 8 = 4.05
    nats over 0. With ``sparse_nats`` = 2 the M-step sets the first to 0 and keeps the
    second and the bar; with 0 (the rule off, as before) all keep their means."""
    if backend == "numba":
        pytest.importorskip("numba")
    from prosper.backends import get_backend

    noise = np.tile([[2.0], [-2.0]], (20, 1))  # mean 0, spread σ
    Y = np.zeros((40, 4))
    Y[:, :2] = 10.0
    Y[:, 2:] = noise + np.array([0.3, 0.9])
    W = np.array([[10.0, 1e-4], [10.0, 1e-4], [1e-4, -10.0], [1e-4, -10.0]])
    params = {"W": W, "pi": np.asarray(0.3), "sigma": np.asarray(2.0)}
    model = MMCAModel(H=2, D=4)
    model.sparse_nats = sparse_nats
    model.start_iteration(99, 100)
    states = ExpectationTruncation(2, 2, 2, model.values)
    _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, get_backend(backend))
    assert float(stats["A"][2, 0]) == pytest.approx(40.0, rel=1e-6)  # cause 0 alone wins
    new = model.mstep(stats, params, 2)["W"]
    np.testing.assert_allclose(new[:2, 0], 10.0, rtol=1e-6)
    np.testing.assert_allclose(new[3, 0], 0.9, rtol=1e-3)
    # the inertia 1 − exp(−40 / 2.5) leaves the old value's share below 1e-6
    assert new[2, 0] == (pytest.approx(0.3, rel=1e-3) if sparse_nats == 0 else 1e-4)
