"""End-to-end ℓq sparse coding: dictionary recovery, HDF5 round trip, inputs checked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import prosper
from prosper import SparseCoding
from prosper.data import get_generator
from prosper.models.sparse_coding import energy


@pytest.fixture(scope="module")
def problem():
    return get_generator("sparse_dictionary")(
        n_samples=2000, D=16, H=24, sparsity=3, noise=0.05, random_state=0
    )


def _recovered(W, W_true, threshold=0.95):
    cos = np.abs(W.T @ W_true)
    rows, cols = linear_sum_assignment(-cos)
    return float(np.mean(cos[rows, cols] > threshold))


@pytest.fixture(scope="module")
def issue_problem():
    """The recovery problem of issue #12: D=32, H=48, 3 non-zeros per point, N=4000."""
    return get_generator("sparse_dictionary")(
        n_samples=4000, D=32, H=48, sparsity=3, noise=0.05, random_state=0
    )


@pytest.mark.parametrize(
    "penalty,lam", [("l1", 0.1), ("l0", 0.1), ("cel0", 0.1), ("l1/2", 0.1), ("l0", 0.2)]
)
def test_recovers_the_generating_dictionary(issue_problem, penalty, lam):
    """Every penalty recovers at least 90 % of the atoms (|cos| > 0.95) in 15 passes.

    (The full-batch learner this replaced recovered 15/48 atoms for ℓ0 and 20/48 for CEL0.)
    """
    problem = issue_problem
    model = SparseCoding(H=48, penalty=penalty, lam=lam, n_iter=15, random_state=0)
    model.fit(problem.Y)
    assert _recovered(model.W_, problem.W) >= 0.9
    np.testing.assert_allclose(np.linalg.norm(model.W_, axis=0), 1.0, rtol=1e-12)
    # online learning lowers the energy (free_energy = −mean energy rises)
    F = model.free_energy_
    assert F[-1] > F[0] and model.n_iter_ == 15
    # the codes are sparse, about as sparse as the generating ones (3 of 48)
    assert 0.04 < model.history_["sparsity"][-1] < 0.2
    assert model.inner_stats_["A"].shape == (48, 48)
    assert int(model.inner_stats_["n_steps"]) == 15 * 8  # ceil(4000 / 512) per pass


def test_partial_fit_learns_from_a_stream(problem):
    """partial_fit on successive chunks (one online step each) recovers the dictionary, and
    continues a fitted model from its statistics."""
    model = SparseCoding(H=24, lam=0.2, batch_size=100, random_state=0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        for chunk in np.array_split(rng.permutation(problem.Y.shape[0]), 20):
            model.partial_fit(problem.Y[chunk])
    assert model.n_iter_ == 120 and int(model.inner_stats_["n_steps"]) == 120
    assert _recovered(model.W_, problem.W) >= 0.9
    # after fit, partial_fit starts from the fitted statistics, not from scratch
    fitted = SparseCoding(H=24, lam=0.2, n_iter=2, random_state=0).fit(problem.Y)
    W_before, steps = fitted.W_.copy(), int(fitted.inner_stats_["n_steps"])
    fitted.partial_fit(problem.Y[:100])
    assert int(fitted.inner_stats_["n_steps"]) == steps + 1 and fitted.n_iter_ == 3
    assert 0 < np.abs(fitted.W_ - W_before).max() < 0.2
    with pytest.raises(ValueError, match="16"):
        fitted.partial_fit(np.ones((5, 7)))


def test_transform_score_and_energy_agree(problem):
    Y = problem.Y[:300]
    model = SparseCoding(H=24, penalty="cel0", lam=0.1, n_iter=5, random_state=1).fit(Y)
    S = model.transform(Y)
    assert S.shape == (300, 24)
    E = energy(Y, S, model.W_, "cel0", 0.1)
    np.testing.assert_allclose(model.energy(Y), E, rtol=1e-12)
    assert model.score(Y) == pytest.approx(-E.mean(), rel=1e-12)
    np.testing.assert_allclose(model.inverse_transform(S), S @ model.W_.T)
    # coded to full accuracy, the MAP code beats small perturbations of its non-zeros
    model.set_params(tol=1e-12, max_iter=20000)
    S = model.transform(Y)
    E = energy(Y, S, model.W_, "cel0", 0.1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        moved = S + 1e-3 * rng.standard_normal(S.shape) * (S != 0)
        assert np.all(energy(Y, moved, model.W_, "cel0", 0.1) >= E - 1e-12)


def test_float32_is_kept(problem):
    model = SparseCoding(H=8, lam=0.2, n_iter=3, dtype="float32", random_state=0)
    model.fit(problem.Y[:200])
    assert model.transform(problem.Y[:5]).dtype == np.float32


def test_results_file_load_and_resume(problem, tmp_path):
    Y = problem.Y[:400]
    out = tmp_path / "sc.h5"
    kwargs = {"H": 12, "penalty": "l1/2", "lam": 0.1, "n_iter": 6, "random_state": 3}
    full = SparseCoding(**kwargs).fit(Y, out=out)
    loaded = prosper.load(out)
    assert isinstance(loaded, SparseCoding) and loaded.penalty == "l1/2"
    np.testing.assert_array_equal(loaded.W_, full.W_)
    np.testing.assert_allclose(loaded.transform(Y[:10]), full.transform(Y[:10]))
    for key in ("free_energy", "sparsity", "rel_error", "coder_iter", "n_replaced"):
        assert loaded.history_[key].shape == (6,)
    # a run stopped after 3 passes and resumed to 6 repeats the uninterrupted one exactly:
    # the online statistics A, B and the counters are in the checkpoint
    part = tmp_path / "part.h5"
    stopped = SparseCoding(**kwargs, callback=lambda it, learner, metrics: it == 2).fit(Y, out=part)
    assert stopped.n_iter_ == 3
    resumed = SparseCoding(**kwargs).fit(Y, out=part, resume=True)
    assert resumed.n_iter_ == 6
    np.testing.assert_array_equal(resumed.W_, full.W_)
    np.testing.assert_array_equal(resumed.free_energy_, full.free_energy_)
    np.testing.assert_array_equal(resumed.inner_stats_["A"], full.inner_stats_["A"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"penalty": "l2"}, "'penalty' parameter of SparseCoding must be one of"),
        ({"lam": 0.0}, "'lam' parameter"),
        ({"lam": -1.0}, "'lam' parameter"),
        ({"H": 0}, "'H' parameter"),
        ({"tol": 0}, "'tol' parameter"),
        ({"solver": "admm"}, "'solver' parameter"),
        ({"batch_size": 0}, "'batch_size' parameter"),
        ({"max_iter": 0}, "'max_iter' parameter"),
        ({"init": "pca"}, "'init' parameter"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseCoding(**kwargs).fit(np.ones((10, 4)))


def test_bad_data_and_unfitted_use_raise():
    with pytest.raises(ValueError, match="NaN"):
        SparseCoding(H=2).fit(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(prosper.NotFittedError):
        SparseCoding().transform(np.ones((2, 3)))
    Y = np.random.default_rng(0).random((20, 4))
    model = SparseCoding(H=3, n_iter=2, random_state=0).fit(Y)
    with pytest.raises(ValueError, match="4"):
        model.transform(np.ones((2, 5)))


def test_generator_checks_its_arguments():
    with pytest.raises(ValueError, match="sparsity"):
        get_generator("sparse_dictionary")(D=4, H=6, sparsity=7)


@pytest.mark.parametrize("method", ["zca", "1/f"])
def test_natural_patches_are_whitened(method):
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    data = get_generator("natural_patches")(size=8, n_samples=4000, method=method, random_state=0)
    assert data.Y.shape == (4000, 64)
    np.testing.assert_allclose(data.Y.mean(axis=1), 0.0, atol=1e-12)  # DC removed
    assert data.Y.var(axis=0).mean() == pytest.approx(1.0)
    evals = np.linalg.eigvalsh(np.cov(data.Y.T))[1:]  # without the removed DC direction
    raw = get_generator("natural_patches")(size=8, n_samples=4000, whiten=False, random_state=0)
    raw_evals = np.linalg.eigvalsh(np.cov(raw.Y.T))[1:]
    # natural images: eigenvalues spread over orders of magnitude; whitening flattens them
    assert raw_evals[-1] / raw_evals[len(raw_evals) // 2] > 20
    # ZCA: flat; 1/f filtering: the low-frequency excess at least halved (its exp(−(f/f₀)⁴)
    # roll-off damps the highest frequencies on purpose, so the low end is not flat)
    flat = evals[-1] / evals[len(evals) // 2]
    assert flat < (1.2 if method == "zca" else raw_evals[-1] / raw_evals[len(raw_evals) // 2] / 2)
    again = get_generator("natural_patches")(size=8, n_samples=4000, method=method, random_state=0)
    np.testing.assert_array_equal(again.Y, data.Y)


def test_natural_patches_without_scikit_learn_says_what_to_install(monkeypatch):
    import importlib.util

    from prosper.data import patches

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'prosper\[data\]'"):
        patches.natural_patches(size=4, n_samples=10)


def test_few_patches_may_leave_an_image_unused():
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    for seed in range(5):
        data = get_generator("natural_patches")(
            size=8, n_samples=1, whiten=False, random_state=seed
        )
        assert data.Y.shape == (1, 64)
