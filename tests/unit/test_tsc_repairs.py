"""TSC's repairs of local optima (``reassignment_ratio``) read for signed latents."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from prosper import TSC
from prosper.backends import get_backend
from prosper.data import bars
from prosper.models.tsc import TSCModel
from prosper.parallel import Communicator
from prosper.solvers.truncated import REASSIGN_EVERY
from tests.helpers import Stop, bars_found, em_step, stop_at

SETTINGS = {"H": 10, "Hprime": 6, "gamma": 3, "n_iter": 40, "temperature": 1.0}
SETTINGS.update(ncut_factor=0.0, backend="numpy", reassignment_ratio=0.3)


# -- the hooks on hand-made values -------------------------------------------------------------
def test_a_column_and_its_negative_are_duplicates():
    W = np.array([[1.0, -1.0, 0.0], [2.0, -2.0, 1.0]])
    similarity = TSCModel(3, 2).latent_similarity({"W": W})
    assert similarity[0, 1] == pytest.approx(1.0)
    assert similarity[0, 2] == pytest.approx(2.0 / np.sqrt(5.0))


def test_on_together_counts_both_signs_and_usage_is_the_mean_magnitude():
    """One point, two states: (+1, -1, 0) with weight 0.75 and (0, +1, +1) with 0.25.
    Σ<s_0 s_1> = -0.75 (a count of opposite signs), but the two are on together 0.75 times."""
    model = TSCModel(3, 2)
    X = np.array([[[2, 1, 0], [0, 2, 2]]], dtype=np.uint8)  # indices into (0, -1, 1)
    q = np.array([[0.75, 0.25]])
    backend = get_backend("numpy")
    pairs = model.repair_statistics(X, q, backend)["pairs"]
    np.testing.assert_allclose(
        pairs, [[0.75, 0.75, 0.0], [0.75, 1.0, 0.25], [0.0, 0.25, 0.25]], atol=1e-15
    )
    ss = backend.KERNELS["linear_state_stats"](X, q, model.values)[1]
    assert ss[0, 1] == pytest.approx(-0.75)
    np.testing.assert_allclose(model.latent_pairs({"pairs": pairs, "ss": ss}), pairs)
    # usage Σ<|s_h|> is the diagonal of the second moment (s² = |s| for ternary latents)
    np.testing.assert_allclose(model.latent_usage({"ss": ss}), np.diag(pairs))
    assert model.latent_pairs({"ss": ss}) is None  # an iteration without the statistic


def test_a_merge_follows_the_sign_of_the_co_activation():
    model = TSCModel(3, 2)
    W = np.array([[1.0, 1.0, 5.0], [0.0, -1.0, 7.0]])
    ss = np.array([[1.0, -0.6, 0.0], [-0.6, 1.0, 0.2], [0.0, 0.2, 1.0]])
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(1.0)}
    new = model.merged(params, {1: (0, 1), 2: (1, 2)}, {"ss": ss})
    np.testing.assert_allclose(new["W"][:, 1], W[:, 0] - W[:, 1])  # opposite signs
    np.testing.assert_allclose(new["W"][:, 2], W[:, 1] + W[:, 2])  # the same sign
    np.testing.assert_array_equal(new["W"][:, 0], W[:, 0])
    np.testing.assert_array_equal(params["W"], W)  # not modified in place


def test_the_spare_point_residual_uses_the_signed_posterior_mean():
    model = TSCModel(3, 2)
    W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(1.0)}
    y = np.array([-1.0, 3.0])
    # the point is -1 times latent 0 plus what no latent explains: (0, 3)
    new = model.reassigned(params, 2, y, np.array([-1.0, 0.0, 0.0]))
    np.testing.assert_allclose(new["W"][:, 2], [0.0, 1.0])  # scaled to the median norm 1


# -- one E- and M-step on signed bars --------------------------------------------------------
@pytest.fixture(scope="module")
def signed_bars():
    return bars(
        size=5, n_samples=600, pi=0.06, amplitude=10.0, sigma=2.0, signed=True, random_state=5
    )


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["b-a", "a-b"])
def test_a_compound_latent_is_merged_into_the_bar_it_stands_for(signed_bars, sign):
    """Column 7 holds ±(bar 7 − bar 3): every point with bar 7 uses it together with latent
    3, with the same or the opposite sign. Σ<s_3 s_7> is negative for a − b, so the binary
    reading (BSC's) never links them; the merge must subtract the columns then."""
    data = signed_bars
    W = data.W.copy()
    W[:, 7] = sign * (data.W[:, 7] - data.W[:, 3])
    params = {"W": W, "pi": np.asarray(0.06), "sigma": np.asarray(2.0)}
    new, metrics, stats = em_step(TSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert np.sign(stats["ss"][3, 7]) == sign and stats["pairs"][3, 7] > 0
    assert metrics["merged"] == 1
    assert bars_found(new["W"], data.W, threshold=0.95, absolute=True) == 10
    plain, _, stats = em_step(
        TSC(**{**SETTINGS, "reassignment_ratio": 0.0}), data.Y, params, REASSIGN_EVERY
    )
    assert bars_found(plain["W"], data.W, absolute=True) < 10 and "pairs" not in stats


def test_a_negated_duplicate_is_reinitialised(signed_bars):
    """Column 0 is −1.02 × column 1 (bar 0 has no latent): the less used of the two takes
    the residual of a poorly explained point (a signed cosine of −1 hid the duplicate)."""
    data = signed_bars
    W = data.W.copy()
    W[:, 0] = -1.02 * W[:, 1]
    params = {"W": W, "pi": np.asarray(0.06), "sigma": np.asarray(2.0)}
    new, metrics, _ = em_step(TSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert metrics["reassigned"] in (0.0, 1.0)
    kept = 1 - int(metrics["reassigned"])
    assert abs(np.corrcoef(new["W"][:, kept], data.W[:, 1])[0, 1]) > 0.99


def test_no_repair_at_the_generating_parameters(signed_bars):
    data = signed_bars
    params = {"W": data.W.copy(), "pi": np.asarray(0.06), "sigma": np.asarray(2.0)}
    _, metrics, _ = em_step(TSC(**SETTINGS), data.Y, params, REASSIGN_EVERY)
    assert metrics["merged"] == 0 and metrics["reassigned"] == -1


def test_a_run_with_repairs_resumes_exactly(signed_bars, tmp_path):
    """The pair statistic is computed afresh at each check: a run stopped before a check
    and resumed makes the same repairs as the uninterrupted one."""
    kwargs = {"H": 10, "n_iter": 24, "random_state": 2, "progress": False}
    kwargs.update(reassignment_ratio=0.3, temperature=[[0, 3.0], [0.6, 1.0]])
    Y = signed_bars.Y
    full = TSC(**kwargs).fit(Y)
    assert full.history_["merged"][10] > 0  # a merge after the point of the stop

    crash = stop_at(7)

    out = tmp_path / "part.h5"
    with pytest.raises(Stop):
        TSC(**kwargs, callback=crash).fit(Y, out=out)
    with h5py.File(out, "r") as f:
        assert f["checkpoint"].attrs["iteration"] == 8
    part = TSC(**kwargs).fit(Y, out=out, resume=True)
    np.testing.assert_allclose(part.W_, full.W_, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(part.history_["merged"], full.history_["merged"])


def test_tsc_defaults_find_every_signed_bar_where_a_merge_is_needed():
    """Signed 5x5 bars, π = 1/H, seed 3 of the grid (benchmarks/bench_states.py): the former
    defaults found 8 of 10 bars, the default schedule without the repairs 8 as well; with
    them a merge gives the missing bars their latents."""
    data = bars(
        size=5, n_samples=2300, pi=0.1, amplitude=10.0, sigma=2.0, signed=True, random_state=3
    )
    found = {}
    for ratio in (None, 0.0):
        est = TSC(H=10, n_iter=100, reassignment_ratio=ratio, random_state=3, progress=False)
        est.fit(data.Y[:2000])
        found[ratio] = bars_found(est.W_, data.W, absolute=True)
        if ratio is None:
            assert (est.history_["merged"] > 0).any()
    assert found[None] == 10 and found[0.0] < 10


@pytest.mark.parametrize("room", [True, False], ids=["room", "any"])
def test_the_spare_point_has_room_for_another_latent(monkeypatch, room):
    """Bar 0 has no latent (column 0 duplicates column 1), π = 2/H and γ = 2: a third of the
    points hold more bars than γ explains, and the poorly explained point chosen among all
    points (the former rule) is one of those, whose residual holds other bars. Chosen among
    points whose best state has fewer than γ latents, its residual is bar 0."""
    data = bars(
        size=5, n_samples=600, pi=0.2, amplitude=10.0, sigma=2.0, signed=True, random_state=5
    )
    W = data.W.copy()
    W[:, 0] = -1.02 * W[:, 1]
    params = {"W": W, "pi": np.asarray(0.2), "sigma": np.asarray(2.0)}
    monkeypatch.setattr(TSCModel, "spare_needs_room", room)
    learner = TSC(**{**SETTINGS, "gamma": 2})._make_learner(25, 0, get_backend("numpy"))
    learner.set_params(params, data.Y.shape[0])
    log_marginal, _ = learner._pass(data.Y, 1.0, 1.0, None, False)
    y, mean_s = learner._spare_point(data.Y, Communicator(None), log_marginal)
    cosine = abs(np.corrcoef(y - W @ mean_s, data.W[:, 0])[0, 1])
    assert (cosine > 0.85) == room
