"""Evolutionary candidate states (TV-EM): the search's kernels, its guarantees, and the
estimators with ``states="evo"``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prosper import BSC, DSC, MCA, TSC
from prosper.backends import evolution as reference
from prosper.backends import numpy_backend
from prosper.data import bars
from prosper.models.base import TruncatedModel
from prosper.models.bsc import BSCModel
from prosper.models.tsc import TSCModel
from prosper.solvers.evolutionary import EvolutionaryStates, SearchSettings

numba_states = pytest.importorskip("prosper.backends.numba_states")

SETTINGS = SearchSettings(n_states=8, n_parents=3, n_children=2, n_generations=2)


def _random_states(rng, B, K, H, V):
    X = rng.integers(0, V, (B, K, H)).astype(np.uint8)
    X[:, 3] = X[:, 1]  # duplicates must be found
    ll, lp = rng.normal(size=(B, K)), rng.normal(size=(B, K))
    return X, ll, lp


@pytest.mark.parametrize("V", [2, 3])
def test_numba_bookkeeping_matches_the_reference(V):
    rng = np.random.default_rng(V)
    B, K, H = 40, 12, 9
    X, ll, lp = _random_states(rng, B, K, H, V)
    keys = reference.zobrist_keys(H, V)
    for a, b in zip(
        reference.evo_select(X, ll, lp, keys, 7),
        numba_states.evo_select(X, ll, lp, keys, 7),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    weights = rng.random((B, H)) + 0.1
    rows = np.arange(B) + 1000
    lj = ll + lp
    lj[:, 2] = -np.inf
    a = reference.evo_children(X, lj, weights, 987654321, rows, 3, 2, V - 1)
    b = numba_states.evo_children(X, lj, weights, 987654321, rows, 3, 2, V - 1)
    np.testing.assert_array_equal(a, b)
    # every child differs from its parent in one or two latents
    assert a.shape == (B, 6, H)


def test_select_keeps_distinct_states_best_first():
    rng = np.random.default_rng(0)
    X, ll, lp = _random_states(rng, 30, 10, 6, 2)
    out_X, out_ll, out_lp = reference.evo_select(X, ll, lp, reference.zobrist_keys(6, 2), 10)
    lj = np.where(np.isfinite(out_ll), out_ll + out_lp, -1e300)
    assert np.all(np.diff(lj, axis=1) <= 0)
    for b in range(30):
        finite = np.isfinite(out_ll[b])
        kept = {tuple(s) for s in out_X[b][finite]}
        assert len(kept) == finite.sum() == len({tuple(s) for s in X[b]})


def test_uniforms_depend_on_the_row_not_on_the_batch():
    key = reference.stream_key(3, 7, 1)
    all_rows = reference.uniforms(key, np.arange(100), 5)
    some = reference.uniforms(key, np.array([97, 3, 50]), 5)
    np.testing.assert_array_equal(some, all_rows[[97, 3, 50]])
    assert np.all((all_rows >= 0) & (all_rows < 1))
    assert abs(all_rows.mean() - 0.5) < 0.05
    assert not np.array_equal(
        all_rows, reference.uniforms(reference.stream_key(3, 8, 1), np.arange(100), 5)
    )


@pytest.mark.parametrize("model_class", [BSCModel, TSCModel])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_explicit_state_terms_match_the_dense_log_joint(model_class, backend):
    from prosper.backends import get_backend

    rng = np.random.default_rng(1)
    H, D, B, K = 7, 5, 6, 9
    model = model_class(H, D)
    params = {"W": rng.normal(size=(D, H)), "pi": np.asarray(0.3), "sigma": np.asarray(0.7)}
    Y = rng.normal(size=(B, D))
    V = len(model.values)
    X = rng.integers(0, V, (B, K, H)).astype(np.uint8)
    kernels = get_backend(backend)
    _, log_joint = model.state_scorer(Y, params, kernels)
    ll, lp = log_joint(X)
    ll_ref, lp_ref = model.log_joint(Y, model.values[X], params)
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-10)
    np.testing.assert_allclose(lp, lp_ref, rtol=1e-10)
    q = rng.random((B, K))
    stats = model.state_stats(Y, X, q, np.ones(B), params, kernels)
    S = model.values[X]
    np.testing.assert_allclose(stats["ss"], np.einsum("bk,bkh,bkg->hg", q, S, S), rtol=1e-10)
    np.testing.assert_allclose(stats["sy"], np.einsum("bk,bkh,bd->dh", q, S, Y), rtol=1e-10)


def _linear_problem(model_class, H: int, B: int, seed: int):
    """A linear model with H latents on D = 9, its random parameters and B points from it."""
    rng = np.random.default_rng(seed)
    model = model_class(H, 9)
    params = {"W": 2 * rng.normal(size=(9, H)), "pi": np.asarray(0.2), "sigma": np.asarray(0.6)}
    Y, _ = model.sample(B, params, rng)
    return model, params, Y


def _brute_force_map(model, Y, params):
    H = model.H
    all_states = np.array(list(itertools.product(range(len(model.values)), repeat=H)), np.uint8)
    X = np.broadcast_to(all_states, (Y.shape[0], *all_states.shape))
    ll, lp = model.log_joint(Y, model.values[X], params)
    return all_states[np.argmax(ll + lp, axis=1)], (ll + lp).max(axis=1)


def test_search_never_loses_ground_and_finds_the_map():
    """At fixed parameters the free energy of the kept states never decreases, and a few
    rounds find nearly every point's most probable state (checked against all 2^H states;
    a local search may miss a MAP four flips away from everything it has seen)."""
    rng = np.random.default_rng(2)
    H, D, B = 8, 6, 60
    model = BSCModel(H, D)
    params = {"W": 3 * rng.normal(size=(D, H)), "pi": np.asarray(0.25), "sigma": np.asarray(0.5)}
    Y, _ = model.sample(B, params, rng)
    settings = SearchSettings(n_states=16, n_parents=4, n_children=4, n_generations=2)
    states = EvolutionaryStates(H, model.values, settings, seed=5)
    scores, log_joint = model.state_scorer(Y, params, numpy_backend)
    X = np.zeros((B, settings.n_states, H), dtype=np.uint8)
    rows = np.arange(B)
    F_old = np.full(B, -np.inf)
    for it in range(20):
        X, ll, lp = states.evolve(X, log_joint, scores, rows, it, np.full(B, it == 0))
        F = np.logaddexp.reduce(ll + lp, axis=1)
        assert np.all(F_old - 1e-9 <= F)
        F_old = F
    best, best_lj = _brute_force_map(model, Y, params)
    assert np.all((ll + lp)[:, 0] <= best_lj + 1e-9)
    found = np.all(X[:, 0] == best, axis=1)
    np.testing.assert_allclose((ll + lp)[found, 0], best_lj[found], rtol=1e-12)
    assert found.sum() >= 57, found.sum()


@pytest.fixture(scope="module")
def bars_data():
    return bars(size=4, n_samples=1000, pi=0.2, amplitude=8.0, sigma=1.0, random_state=0)


def _recovered(W_true, W):
    Wn = W / np.linalg.norm(W, axis=0)
    Tn = W_true / np.linalg.norm(W_true, axis=0)
    return int(((Tn.T @ Wn).max(axis=1) > 0.95).sum())


def test_bsc_evo_recovers_the_bars(bars_data):
    model = BSC(
        H=8,
        states="evo",
        n_iter=40,
        temperature=[[0, 3.0], [0.6, 1.0]],
        anneal_prior=False,
        random_state=0,
        backend="numba",
        progress=False,
    )
    model.fit(bars_data.Y)
    assert _recovered(bars_data.W, model.W_) == 8
    assert abs(model.sigma_ - 1.0) < 0.1
    assert model.transform(bars_data.Y[:5]).shape == (5, 8)
    assert np.isfinite(model.score(bars_data.Y[:50]))
    assert model.sample(3, random_state=0)[0].shape == (3, 16)


def test_numpy_and_numba_give_the_same_model(bars_data):
    fits = [
        BSC(H=8, states="evo", n_iter=8, random_state=3, backend=b, progress=False).fit(bars_data.Y)
        for b in ("numpy", "numba")
    ]
    np.testing.assert_allclose(fits[1].W_, fits[0].W_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fits[1].free_energy_, fits[0].free_energy_, rtol=1e-10)


def test_batches_do_not_change_the_result(bars_data):
    """The search's randomness is keyed by row, not by the batch a row falls in."""
    fits = [
        BSC(H=8, states="evo", n_iter=6, batch_size=b, random_state=3, backend="numpy").fit(
            bars_data.Y
        )
        for b in (600, 77)
    ]
    np.testing.assert_allclose(fits[1].W_, fits[0].W_, rtol=1e-9, atol=1e-9)


def test_resumed_evo_run_continues_exactly(bars_data, tmp_path):
    """The states are checkpointed: extending a run gives the uninterrupted run's model."""
    common = {"H": 8, "states": "evo", "temperature": 1.0, "random_state": 4, "backend": "numpy"}
    full = BSC(n_iter=10, **common).fit(bars_data.Y)
    out = tmp_path / "evo.h5"
    BSC(n_iter=5, **common).fit(bars_data.Y, out=out)
    resumed = BSC(n_iter=10, **common).fit(bars_data.Y, out=out, resume=True)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resumed.free_energy_, full.free_energy_, rtol=1e-12)


def test_ternary_and_discrete_models_run_with_evo(tmp_path):
    data = bars(size=3, n_samples=300, pi=0.3, signed=True, random_state=1)
    common = {
        "states": "evo",
        "n_iter": 5,
        "temperature": 1.0,
        "random_state": 0,
        "backend": "numpy",
    }
    full = TSC(H=6, n_iter=5, **{k: v for k, v in common.items() if k != "n_iter"})
    full.fit(data.Y)
    out = tmp_path / "tsc.h5"
    TSC(H=6, **{**common, "n_iter": 3}).fit(data.Y, out=out)
    resumed = TSC(H=6, **common).fit(data.Y, out=out, resume=True)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=1e-12, atol=1e-12)
    dsc = DSC(H=6, values=(0, 1, 2), **common).fit(np.abs(data.Y))
    assert np.all(np.isfinite(dsc.W_))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"states": "evo", "n_states": 0}, "n_states"),
        ({"states": "genetic"}, "states"),
        ({"states": "evo", "n_init": 0}, "n_init"),
    ],
)
def test_bad_state_settings_are_refused(bars_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BSC(H=8, n_iter=2, **kwargs).fit(bars_data.Y)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"states": "evo", "Hprime": 4, "ncut_factor": 0.5}, "Hprime, ncut_factor"),
        ({"states": "full", "gamma": 2}, "gamma"),
        ({"n_states": 16}, "n_states"),
    ],
)
def test_settings_of_other_state_sets_are_ignored_with_a_warning(bars_data, kwargs, named, caplog):
    """A job file switches state sets with one key; what no longer applies is named."""
    with caplog.at_level("WARNING", logger="prosper"):
        BSC(H=8, n_iter=1, backend="numpy", **kwargs).fit(bars_data.Y)
    assert f"{named} do(es) not apply to states={kwargs.get('states', 'et')!r}" in caplog.text


def test_full_enumeration_is_exact_em(bars_data):
    a = BSC(H=6, states="full", n_iter=3, random_state=0, backend="numpy").fit(bars_data.Y)
    b = BSC(H=6, Hprime=6, gamma=6, n_iter=3, random_state=0, backend="numpy")
    b.fit(bars_data.Y)
    np.testing.assert_allclose(a.W_, b.W_, rtol=1e-12)


class _NoExplicitModel(BSCModel):
    """A model without statistics for explicit states (every shipped model has them)."""

    state_stats = TruncatedModel.state_stats


class _NoExplicit(BSC):
    _model_class = _NoExplicitModel


def test_model_without_explicit_statistics_says_so(bars_data):
    assert MCA._model_class.supports_explicit_states()
    assert not _NoExplicitModel.supports_explicit_states()
    with pytest.raises(ValueError, match="not available for _NoExplicit"):
        _NoExplicit(H=8, states="evo", n_iter=2).fit(bars_data.Y)


class _PlainBSCModel(BSCModel):
    """BSC without its fused E-step: the solver's generic path over explicit states."""

    fused_estep = False


class _PlainBSC(BSC):
    _model_class = _PlainBSCModel


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_generic_et_path_matches_the_fused_estep(bars_data, backend):
    """A model without a fused E-step learns the same model through the generic path,
    ET data selection included."""
    common = {
        "H": 8,
        "Hprime": 5,
        "gamma": 3,
        "n_iter": 6,
        "random_state": 2,
        "backend": backend,
        "ncut_factor": 0.5,
    }
    fused = BSC(**common).fit(bars_data.Y)
    plain = _PlainBSC(**common).fit(bars_data.Y)
    np.testing.assert_allclose(plain.W_, fused.W_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plain.free_energy_, fused.free_energy_, rtol=1e-10)
    np.testing.assert_allclose(
        plain.transform(bars_data.Y[:20]), fused.transform(bars_data.Y[:20]), atol=1e-10
    )


def test_n_init_keeps_the_best_initialisation(bars_data, tmp_path):
    """n_init fits several starts and records the best: the same model as a single fit with
    the kept seed, at least as good as the first start alone."""
    common = {"H": 8, "states": "evo", "n_states": 8, "n_iter": 6, "backend": "numpy"}
    best = BSC(n_init=3, random_state=0, **common).fit(bars_data.Y, out=tmp_path / "best.h5")
    first = BSC(random_state=0, **common).fit(bars_data.Y)
    again = BSC(random_state=best.seed_, **common).fit(bars_data.Y)
    assert best.free_energy_[-1] >= first.free_energy_[-1]
    np.testing.assert_allclose(best.W_, again.W_, rtol=1e-12)
    np.testing.assert_allclose(best.free_energy_, again.free_energy_, rtol=1e-12)
    import prosper

    np.testing.assert_allclose(prosper.load(tmp_path / "best.h5").W_, best.W_)


@pytest.mark.parametrize(
    ("model_class", "H", "settings"),
    [
        (BSCModel, 12, SETTINGS),
        (TSCModel, 12, SETTINGS),
        # S H = 91 bytes per row: the states are read byte by byte, not in 64-bit words
        (BSCModel, 13, SearchSettings(n_states=7, n_parents=3, n_children=2, n_generations=2)),
        # ~13 active latents of 64: many runs between blocked latents for the add moves
        (BSCModel, 64, SearchSettings(n_states=8, n_parents=4, n_children=4, n_generations=3)),
        # binary states of more than 64 latents: sorted lists, not 64-bit masks
        (BSCModel, 65, SearchSettings(n_states=8, n_parents=4, n_children=4, n_generations=3)),
    ],
)
def test_fused_linear_search_makes_the_generic_search_s_choices(model_class, H, settings):
    """numba's fused search of a linear model returns the states of the generic search
    (NumPy bookkeeping and log-joints) over several E-steps."""
    from prosper.backends import get_backend

    B = 40
    model, params, Y = _linear_problem(model_class, H, B, seed=4)
    rows = np.arange(B) + 77
    results = []
    for backend in ("numpy", "numba"):
        states = EvolutionaryStates(H, model.values, settings, seed=9)
        kernels = get_backend(backend)
        X = np.zeros((B, settings.n_states, H), dtype=np.uint8)
        for it in range(4):
            fused = model.state_search(Y, params, kernels)
            assert (fused is None) == (backend == "numpy")
            if fused is None:
                scores, log_joint = model.state_scorer(Y, params, kernels)
                X, ll, lp = states.evolve(X, log_joint, scores, rows, it, np.full(B, it == 0))
            else:
                X, ll, lp = states.evolve(
                    X, None, fused[0], rows, it, np.full(B, it == 0), kernels.KERNELS, fused[1]
                )
        results.append((X, ll, lp))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10)
    np.testing.assert_allclose(results[1][2], results[0][2], rtol=1e-10)


@pytest.mark.parametrize("model_class", [BSCModel, TSCModel])
@pytest.mark.parametrize("H", [12, 70])
def test_fused_search_estep_equals_search_then_posterior(model_class, H):
    """numba's fused search and E-step gives the states of the fused search and the log
    marginals and statistics of the solver's generic posterior over them (tempered, with
    data-point weights); above H = 64 its Σ y<s>ᵀ is summed sparsely in the kernel."""
    from prosper.backends import get_backend
    from prosper.backends.numpy_backend import log_normalise

    B = 40
    model, params, Y = _linear_problem(model_class, H, B, seed=5)
    rows = np.arange(B) + 11
    kernels = get_backend("numba")
    weight = np.where(np.arange(B) % 5 == 0, 0.0, 1.0)
    X = np.zeros((B, SETTINGS.n_states, H), dtype=np.uint8)
    for it, beta in enumerate((0.5, 1.0)):
        fresh = np.full(B, it == 0)
        states = EvolutionaryStates(H, model.values, SETTINGS, seed=9)
        scores, search = model.state_search(Y, params, kernels)
        Xs, ll, lp = states.evolve(X, None, scores, rows, it, fresh, kernels.KERNELS, search)
        lm, q = log_normalise(ll + lp)
        q = log_normalise(beta * ll + lp)[1]
        stats = model.state_stats(Y, Xs, q, weight, params, kernels)
        scores, estep = model.state_estep(Y, params, kernels)
        Xf, lmf, statsf = states.evolve_estep(
            X, scores, rows, it, fresh, estep, beta, 1.0, weight, True
        )
        np.testing.assert_array_equal(Xf, Xs)
        np.testing.assert_allclose(lmf, lm, rtol=1e-13)
        for name in stats:
            # entries of Σ y<s>ᵀ where terms cancel are compared against the largest one
            scale = 1e-13 * np.abs(stats[name]).max()
            np.testing.assert_allclose(
                statsf[name], stats[name], rtol=1e-13, atol=scale, err_msg=name
            )
        Xn, lmn, none = states.evolve_estep(
            X, scores, rows, it, fresh, estep, beta, 1.0, weight, False
        )
        assert none is None
        np.testing.assert_array_equal(Xn, Xs)
        np.testing.assert_allclose(lmn, lm, rtol=1e-13)
        # the solver's in-place update: the new states overwrite the given ones (fresh rows
        # are initialised in a copy, which then receives them)
        given = X.copy()
        Xi, lmi, _ = states.evolve_estep(
            given, scores, rows, it, fresh, estep, beta, 1.0, weight, False, in_place=True
        )
        assert np.shares_memory(Xi, given) == (not fresh.any())
        np.testing.assert_array_equal(Xi, Xs)
        np.testing.assert_array_equal(lmi, lmn)
        X = Xs
    # the NumPy backend has no fused E-step: the solver runs the search and the posterior
    assert model.state_estep(Y, params, get_backend("numpy")) is None


@pytest.mark.parametrize("H", [12, 64, 65, 70])
def test_fused_estep_on_stored_bits_equals_value_indices(H):
    """The fused E-step reading and writing binary states as bits (the solver's storage)
    gives the states, log marginals and statistics of the same E-step on value indices, in
    both of numba's kernels (bit masks for H <= 64, sorted lists above), with fresh rows."""
    from prosper.backends import get_backend

    B = 30
    model, params, Y = _linear_problem(BSCModel, H, B, seed=3)
    kernels = get_backend("numba")
    rows = np.arange(B) + 5
    weight = np.linspace(0.0, 1.0, B)
    states = EvolutionaryStates(H, model.values, SETTINGS, seed=4)
    states.attach(B, 5)
    assert states.data.shape == (B, SETTINGS.n_states, (H + 7) // 8)
    X = np.zeros((B, SETTINGS.n_states, H), dtype=np.uint8)
    for it in range(3):
        fresh = np.arange(B) % 7 == 0 if it == 1 else np.full(B, it == 0)
        scores, estep = model.state_estep(Y, params, kernels)
        Xv, lmv, statsv = states.evolve_estep(
            X, scores, rows, it, fresh, estep, 0.8, 1.0, weight, True
        )
        stored = states.pack(X)
        Xb, lmb, statsb = states.evolve_estep(
            stored, scores, rows, it, fresh, estep, 0.8, 1.0, weight, True, in_place=True,
            packed=True,
        )  # fmt: skip
        assert Xb.shape == stored.shape
        assert np.shares_memory(Xb, stored) == (not fresh.any())
        np.testing.assert_array_equal(states.unpack(Xb), Xv)
        np.testing.assert_array_equal(lmb, lmv)
        for name in statsv:
            np.testing.assert_array_equal(statsb[name], statsv[name], err_msg=name)
        assert np.any(Xv[:, :, : H // 2]) and np.any(Xv[:, :, H // 2 :])
        X = Xv


def test_fused_search_refuses_states_of_another_width():
    """Bits passed as value indices (or the reverse) would be read out of bounds."""
    from prosper.backends import numba_search

    H, B = 20, 3
    model, params, Y = _linear_problem(BSCModel, H, B, seed=0)
    (WY, yy, WtW, logp, sigma2), _ = model._batch_terms(Y, params)
    states = EvolutionaryStates(H, model.values, SETTINGS, seed=0)
    bits = np.zeros((B, SETTINGS.n_states, 3), dtype=np.uint8)
    args = (WY, WtW, yy, model.values, logp, sigma2, model.D, np.full((B, H), 1 / H),
            states.keys, [1], np.arange(B), 2, 2)  # fmt: skip
    with pytest.raises(ValueError, match="H = 20 needs 20"):
        numba_search.linear_search(bits, *args)
    with pytest.raises(ValueError, match="H = 20 needs 3"):
        numba_search.linear_search(states.unpack(bits), *args, packed=True)


def test_binary_states_are_stored_as_bits():
    """Binary latents: a bit per latent in storage (np.packbits' order, as the checkpoint
    holds them); more values: a byte. A checkpoint block of the wrong shape is refused."""
    H, S, n = 21, 4, 5
    settings = SearchSettings(n_states=S, n_parents=2, n_children=2, n_generations=1)
    rng = np.random.default_rng(0)
    for values, width in (([0.0, 1.0], 3), ([0.0, -1.0, 1.0], H)):
        states = EvolutionaryStates(H, values, settings, seed=0)
        states.attach(n, 0)
        assert states.data.shape == (n, S, width) and states.data.dtype == np.uint8
        X = rng.integers(0, len(values), (2, S, H)).astype(np.uint8)
        states.store(slice(1, 3), X)
        np.testing.assert_array_equal(states.rows(slice(1, 3)), X)
        assert not states.rows(slice(0, 1)).any() and not states.rows(slice(3, 5)).any()
        if len(values) == 2:
            np.testing.assert_array_equal(states.packed()[1:3], np.packbits(X, axis=-1))
        block = states.packed().copy()
        states.attach(n, 0)
        states.restore(block)
        np.testing.assert_array_equal(states.rows(slice(1, 3)), X)
        with pytest.raises(ValueError, match="stored evolutionary states have shape"):
            states.restore(block[:, :, :2])
        # a latent beyond H (a padding bit) or a value beyond the model's: damaged
        damaged = block.copy()
        damaged[0, 0, -1] |= 1 if len(values) == 2 else len(values)
        with pytest.raises(ValueError, match="checkpoint is damaged"):
            states.restore(damaged)
