"""Re-initialisation of unused latents in truncated EM (``reassignment_ratio``)."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import BSC, DSC, GSC, TSC
from prosper.backends import get_backend
from prosper.data import bars
from prosper.models.gsc import GSCModel
from prosper.models.tsc import TSCModel
from prosper.parallel import Communicator
from prosper.solvers.truncated import REASSIGN_EVERY, REASSIGN_QUANTILE, misfit_margin
from tests.helpers import bars_found


def _learner(est, Y, params):
    learner = est._make_learner(Y.shape[1], 0, get_backend("numpy"))
    learner.set_params(params, Y.shape[0])
    return learner


def _step(est, Y, params, iteration):
    """The engine's parameters and metrics after one E- and M-step from ``params``."""
    learner = _learner(est, Y, params)
    stats = learner.estep(Y, Communicator(None), iteration)
    metrics = learner.mstep(stats, iteration)
    return learner.params, metrics


@pytest.fixture(scope="module")
def blocked():
    """5x5 bars whose generating latent 0 is replaced by a column no data point can use
    (all bars at once, five times over)."""
    data = bars(size=5, n_samples=400, pi=0.2, amplitude=10.0, sigma=2.0, random_state=3)
    W = data.W.copy()
    W[:, 0] = 5.0 * data.W.sum(axis=1)
    return data.Y, {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}


SETTINGS = {"H": 10, "Hprime": 6, "gamma": 3, "n_iter": 40, "temperature": 1.0}
SETTINGS.update(ncut_factor=0.0, backend="numpy")


@pytest.mark.parametrize("estimator", [BSC, TSC])
def test_an_unused_latent_takes_the_residual_of_a_poorly_explained_point(
    blocked, estimator, monkeypatch
):
    # the generic rule (TSC also restricts the points to those with room for another
    # latent: tests/unit/test_tsc_repairs.py)
    monkeypatch.setattr(TSCModel, "spare_needs_room", False)
    Y, params = blocked
    new, metrics = _step(estimator(reassignment_ratio=0.3, **SETTINGS), Y, params, REASSIGN_EVERY)
    plain, plain_metrics = _step(
        estimator(reassignment_ratio=0.0, **SETTINGS), Y, params, REASSIGN_EVERY
    )
    assert metrics["reassigned"] == 0 and "reassigned" not in plain_metrics
    np.testing.assert_array_equal(new["W"][:, 1:], plain["W"][:, 1:])
    # the point: the median of those whose log marginal (entering params) lies more than
    # the misfit margin below the median, at most the 10 % point
    ref = _learner(estimator(reassignment_ratio=0.3, **SETTINGS), Y, params)
    log_marginal = ref.log_marginals(Y)
    order = np.argsort(log_marginal)
    median = log_marginal[order[Y.shape[0] // 2]]  # N even: the smallest of the upper half
    misfits = np.sum(log_marginal < median - misfit_margin(Y.shape[1]))
    assert misfits > 0
    k = min((misfits + 1) // 2, int(np.ceil(REASSIGN_QUANTILE * Y.shape[0])))
    n = int(order[k - 1])
    mean_s = ref.posterior_mean(Y[n : n + 1])[0]
    residual = Y[n] - plain["W"] @ mean_s
    scale = np.median(np.linalg.norm(plain["W"], axis=0)) / np.linalg.norm(residual)
    np.testing.assert_allclose(new["W"][:, 0], residual * scale, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("iteration", [REASSIGN_EVERY + 1, 20, 0])
def test_latents_are_only_reassigned_every_few_iterations_of_the_first_half(blocked, iteration):
    Y, params = blocked
    new, metrics = _step(BSC(**SETTINGS), Y, params, iteration)
    plain, _ = _step(BSC(reassignment_ratio=0.0, **SETTINGS), Y, params, iteration)
    assert metrics["reassigned"] == -1
    np.testing.assert_array_equal(new["W"], plain["W"])


def test_no_latent_is_reassigned_when_every_point_is_well_explained(blocked):
    """Data drawn from the blocked dictionary itself, without latent 0: latent 0 is unused,
    but no point is poorly explained, so there is nothing for it to take over."""
    Y, params = blocked
    rng = np.random.default_rng(0)
    S = (rng.random((400, 10)) < 0.2).astype(float)
    S[:, 0] = 0.0
    Y = S @ params["W"].T + 2.0 * rng.standard_normal((400, params["W"].shape[0]))
    exact = {**SETTINGS, "Hprime": 10, "gamma": 10}  # no point loses mass to the truncation
    _, metrics = _step(BSC(**exact), Y, params, REASSIGN_EVERY)
    assert metrics["reassigned"] == -1


def test_a_latent_is_only_reinitialised_when_it_is_unused():
    data = bars(size=5, n_samples=400, pi=0.2, amplitude=10.0, sigma=2.0, random_state=3)
    params = {"W": data.W.copy(), "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}
    _, metrics = _step(BSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert metrics["reassigned"] == -1


def test_reassignment_finds_the_bar_a_mixture_latent_hides():
    """10x10 bars (seed 1): without reassignment one latent settles on two bars that others
    already explain and bars are missed; with the default all 20 are found."""
    data = bars(size=10, n_samples=2300, pi=0.1, amplitude=10.0, sigma=2.0, random_state=1)
    found = {}
    for ratio in (0.0, 0.3):
        est = BSC(H=20, n_iter=100, reassignment_ratio=ratio, random_state=1, progress=False)
        est.fit(data.Y)
        found[ratio] = bars_found(est.W_, data.W)
        if ratio:
            assert (est.history_["reassigned"] >= 0).any()
    assert found[0.0] < 20 and found[0.3] == 20


def test_gsc_reassigned_latent_gets_the_median_spike_probability():
    model = GSCModel(3, 4)
    params = {
        "W": np.eye(4, 3),
        "pi": np.array([0.2, 0.001, 0.4]),
        "mu": np.zeros(3),
        "psi": np.ones(3),
        "sigma": np.asarray(1.0),
    }
    y = np.array([0.0, 0.0, 0.0, 3.0])
    new = model.reassigned(params, 1, y, np.zeros(3))
    np.testing.assert_allclose(new["W"][:, 1], [0.0, 0.0, 0.0, 1.0])
    assert new["pi"][1] == pytest.approx(0.2)
    np.testing.assert_array_equal(params["pi"], [0.2, 0.001, 0.4])  # not modified in place


def test_reassignment_is_on_by_default_for_bsc_tsc_and_dsc(blocked):
    Y, params = blocked
    assert _step(BSC(**SETTINGS), Y, params, REASSIGN_EVERY)[1]["reassigned"] == 0
    assert _step(TSC(**SETTINGS), Y, params, REASSIGN_EVERY)[1]["reassigned"] == 0
    dsc = {"W": params["W"], "pi": np.array([0.8, 0.2]), "sigma": params["sigma"]}
    assert _step(DSC(values=(0, 1), **SETTINGS), Y, dsc, REASSIGN_EVERY)[1]["reassigned"] == 0


def test_reassignment_ratio_is_checked():
    with pytest.raises(ValueError, match="reassignment_ratio"):
        BSC(H=4, reassignment_ratio=1.5).fit(np.ones((10, 3)))


def _triangle(W, a, b, c):
    """W whose columns a, b, c stand for the bars a, b, c as (a + b − c)/2 and its
    rotations: every single bar is the sum of two of them."""
    W = W.copy()
    A, B, C = W[:, a].copy(), W[:, b].copy(), W[:, c].copy()
    W[:, a], W[:, b], W[:, c] = (A + B - C) / 2, (B + C - A) / 2, (C + A - B) / 2
    return W


def _compound(W, a, b):
    """W whose column b is bar b minus bar a: bar b is column a and column b together."""
    W = W.copy()
    W[:, b] = W[:, b] - W[:, a]
    return W


@pytest.mark.parametrize(
    "broken, n_merged",
    [(lambda W: _triangle(W, 0, 1, 2), 3), (lambda W: _compound(W, 3, 7), 1)],
    ids=["triangle", "compound"],
)
def test_latents_only_ever_on_together_are_merged_into_the_bars_they_stand_for(broken, n_merged):
    """The local optima of bars at π = 1/H (benchmarks/RESULTS.md, session 6): EM keeps
    them (every data point is explained), the merge gives each bar its own latent."""
    data = bars(size=5, n_samples=600, pi=0.06, amplitude=10.0, sigma=2.0, random_state=5)
    params = {"W": broken(data.W), "pi": np.asarray(0.06), "sigma": np.asarray(2.0)}
    new, metrics = _step(BSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    plain, _ = _step(BSC(**{**SETTINGS, "reassignment_ratio": 0.0}), data.Y, params, REASSIGN_EVERY)
    assert bars_found(plain["W"], data.W) < 10
    assert metrics["merged"] == n_merged and metrics["reassigned"] == -1
    assert bars_found(new["W"], data.W, threshold=0.95) == 10


def test_no_latents_are_merged_at_the_generating_parameters():
    """Independent causes: two bars are on together as often as their usage predicts."""
    data = bars(size=5, n_samples=600, pi=0.2, amplitude=10.0, sigma=2.0, random_state=5)
    params = {"W": data.W.copy(), "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}
    _, metrics = _step(BSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert metrics["merged"] == 0


def test_the_less_used_of_two_duplicate_latents_is_reinitialised():
    """Two columns hold bar 1 (usage split between them, neither under-used by the ratio);
    bar 0 has none, so its points are poorly explained: a duplicate takes one of them."""
    data = bars(size=5, n_samples=400, pi=0.2, amplitude=10.0, sigma=2.0, random_state=3)
    W = data.W.copy()
    W[:, 0] = 1.02 * W[:, 1]
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}
    new, metrics = _step(BSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    learner = _learner(BSC(**SETTINGS), data.Y, params)
    usage = np.diag(learner.estep(data.Y, Communicator(None), REASSIGN_EVERY)["ss"])
    assert usage[0] > 0.3 * np.median(usage) and usage[1] > 0.3 * np.median(usage)
    assert metrics["reassigned"] in (0.0, 1.0)
    kept = 1 - int(metrics["reassigned"])
    assert abs(np.corrcoef(new["W"][:, kept], data.W[:, 1])[0, 1]) > 0.99


def test_bsc_defaults_find_every_bar_where_a_compound_latent_held_one_before():
    """5x5 bars, π = 1/H, seed 9 of the grid (benchmarks/bench_states.py): with the
    session-5 defaults one latent ended as bar 8 minus another bar (9 of 10 bars found)."""
    data = bars(size=5, n_samples=2300, pi=0.1, amplitude=10.0, sigma=2.0, random_state=9)
    est = BSC(H=10, n_iter=100, random_state=9, progress=False).fit(data.Y[:2000])
    assert bars_found(est.W_, data.W) == 10
    assert (est.history_["merged"] > 0).any()


def test_bsc_evo_defaults_find_every_bar_where_the_search_alone_misses_one():
    """10x10 bars, π = 2/H, seed 0 (session 9, the time-to-quality problem of
    benchmarks/bench_states.py at N = 2000): evolutionary states without the repairs end
    with 19 of 20 bars; with BSC's defaults (re-initialisation at ratio 0.3) every bar is
    found: the re-initialised latents enter the states each point keeps across iterations."""
    data = bars(size=10, n_samples=2000, pi=0.1, amplitude=10.0, sigma=2.0, random_state=0)
    settings = {"H": 20, "states": "evo", "n_iter": 40, "random_state": 0, "progress": False}
    alone = BSC(**settings, reassignment_ratio=0.0).fit(data.Y)
    assert bars_found(alone.W_, data.W) == 19
    est = BSC(**settings).fit(data.Y)
    assert bars_found(est.W_, data.W) == 20
    assert (est.history_["reassigned"] >= 0).any()


GSC_SETTINGS = {**SETTINGS, "Hprime": 6, "gamma": 3}


def test_gsc_pair_of_a_sum_and_a_difference_latent_is_split_into_its_two_bars():
    """GSC's local optimum at π = 1/H (benchmarks/RESULTS.md, session 7): bars a and b are
    held by a latent (a + b)/2 with slab mean 5 and a latent (a − b)/2 whose slab straddles
    zero (±5 picks a or b), both on for every point of either bar. Every point is
    explained; the split gives each bar its own latent."""
    from prosper.data.spike_slab import gsc_data

    data = gsc_data(600, D=25, H=10, pi=0.1, mu=5.0, psi=1.0, dictionary="bars", random_state=5)
    a, b = 2, 7
    W = data.W.copy()
    W[:, a], W[:, b] = (data.W[:, a] + data.W[:, b]) / 2, (data.W[:, a] - data.W[:, b]) / 2
    mu, psi, pi = np.full(10, 5.0), np.ones(10), np.full(10, 0.1)
    mu[b], psi[b], pi[a], pi[b] = 0.0, 26.0, 0.2, 0.2
    params = {"W": W, "pi": pi, "mu": mu, "psi": psi, "sigma": np.asarray(0.5)}
    est = GSC(**GSC_SETTINGS)
    new, metrics = _step(est, data.Y, params, REASSIGN_EVERY)
    plain, _ = _step(GSC(**{**GSC_SETTINGS, "reassignment_ratio": 0.0}), data.Y, params, 1)
    assert bars_found(plain["W"], data.W, absolute=True) < 10
    assert metrics["merged"] == 1 and metrics["reassigned"] == -1
    assert bars_found(new["W"], data.W, threshold=0.95, absolute=True) == 10
    assert set(np.flatnonzero(new["mu"] == 1.0)) == {a, b}  # both members redefined


def test_gsc_spike_pairs_are_the_same_on_every_e_step_path():
    """Σ⟨b_g⟩⟨b_h⟩ from the NumPy E-step, the numba kernel and explicit states agree."""
    from prosper.data.spike_slab import gsc_data
    from prosper.models.gsc import spike_pairs

    data = gsc_data(200, D=25, H=10, pi=0.2, mu=5.0, dictionary="bars", random_state=1)
    model = GSCModel(10, 25)
    params = {
        "W": data.W,
        "pi": np.full(10, 0.2),
        "mu": np.full(10, 5.0),
        "psi": np.ones(10),
        "sigma": np.asarray(0.5),
    }
    est = GSC(**{**GSC_SETTINGS, "backend": "numpy"})
    learner = _learner(est, data.Y, params)
    mask = (np.arange(200) % 3 != 0).astype(np.float64)
    batch = model.candidates(data.Y, learner.states, params)
    stats = {
        name: model.estep_batch(data.Y, learner.states, params, 0.7, 0.7, mask, True, backend)[1]
        for name, backend in (("numpy", get_backend("numpy")), ("numba", get_backend("numba")))
    }
    np.testing.assert_allclose(stats["numba"]["bb"], stats["numpy"]["bb"], rtol=1e-9, atol=1e-9)
    # the diagonal is Σ⟨b⟩² <= Σ⟨b⟩, the matrix symmetric
    assert np.all(np.diag(stats["numpy"]["bb"]) <= stats["numpy"]["b"] + 1e-9)
    np.testing.assert_allclose(stats["numpy"]["bb"], stats["numpy"]["bb"].T)
    X = batch.indices()
    ll, lp = model.log_joint(data.Y, X, params)
    lj = 0.7 * (ll + lp)
    q = np.exp(lj - lj.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    explicit = model.state_stats(data.Y, X, q, mask, params, None)
    np.testing.assert_allclose(explicit["bb"], stats["numpy"]["bb"], rtol=1e-8, atol=1e-8)
    # a masked point does not count
    one = np.zeros((2, 10))
    one[0, :2] = 1.0
    np.testing.assert_array_equal(spike_pairs(one, np.array([0.0, 1.0])), 0.0)


def test_gsc_defaults_find_every_bar_where_a_sum_and_a_difference_latent_held_two():
    """5x5 spike-and-slab bars, π = 1/H, seed 0 of the grid (benchmarks/bench_states.py):
    with the session-6 defaults two latents ended along a + b and a − b (8 of 10 bars)."""
    from prosper.data.spike_slab import gsc_data

    data = gsc_data(2300, D=25, H=10, pi=0.1, mu=5.0, psi=1.0, dictionary="bars", random_state=0)
    est = GSC(H=10, n_iter=100, random_state=0, progress=False).fit(data.Y[:2000])
    assert bars_found(est.W_, data.W, absolute=True) == 10
    assert (est.history_["merged"] > 0).any()


def test_gsc_copies_of_one_bar_that_share_its_points_are_reinitialised_not_merged():
    """16x16 grid seed 1 (session 7): copies of one bar, each with part of its slab, are on
    together for every point of the bar while another bar has no latent. A merge would
    give back a copy; the duplicate rule gives the missing bar a latent."""
    from prosper.data.spike_slab import gsc_data

    data = gsc_data(600, D=25, H=10, pi=0.1, mu=5.0, psi=1.0, dictionary="bars", random_state=5)
    W = data.W.copy()
    W[:, 8] = W[:, 3]
    mu, psi = np.full(10, 5.0), np.ones(10)
    mu[[3, 8]], psi[[3, 8]] = 2.5, 0.25
    params = {"W": W, "pi": np.full(10, 0.1), "mu": mu, "psi": psi, "sigma": np.asarray(0.5)}
    new, metrics = _step(GSC(**GSC_SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert metrics["merged"] == 0 and metrics["reassigned"] in (3.0, 8.0)
    assert bars_found(new["W"], data.W, absolute=True) == 10
