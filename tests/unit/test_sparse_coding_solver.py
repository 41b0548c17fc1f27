"""Coders and the online learner of ℓq sparse coding (prosper.solvers.sparse_coding)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from prosper.data import get_generator
from prosper.models.sparse_coding import PENALTIES, SparseCodingModel, energy
from prosper.parallel import Communicator, get_comm, row_block
from prosper.solvers.prox import PROX
from prosper.solvers.sparse_coding import (
    Coder,
    OnlineSparseCoding,
    StratifiedBatches,
    coordinate_descent,
)


@pytest.fixture(scope="module")
def batch():
    data = get_generator("sparse_dictionary")(
        n_samples=300, D=12, H=20, sparsity=3, noise=0.05, random_state=1
    )
    W = data.W
    return data.Y, W, W.T @ W, data.Y @ W


@pytest.mark.parametrize("penalty", PENALTIES)
def test_coordinate_descent_reaches_a_coordinatewise_minimum(batch, penalty):
    """At the result no single coordinate can lower the energy: each s_h is the prox of its
    own coordinate problem (the exact minimiser given the others)."""
    Y, W, G, C = batch
    S, n_iter = coordinate_descent(C, G, np.zeros_like(C), penalty, 0.1, 5000, 1e-10)
    assert n_iter.max() < 5000
    c = C - S @ G
    for h in range(G.shape[0]):
        z = S[:, h] + c[:, h] / G[h, h]
        if penalty in ("l0", "cel0"):
            best = np.where(np.abs(z) > np.sqrt(2 * 0.1 / G[h, h]), z, 0.0)
        else:
            best = PROX[penalty](z, 1.0 / G[h, h], 0.1)
        np.testing.assert_allclose(S[:, h], best, atol=1e-7)
    # and it is a descent method: no point ends above the energy of the zero code
    E = energy(Y, S, W, penalty, 0.1)
    assert np.all(energy(Y, np.zeros_like(S), W, penalty, 0.1) + 1e-12 >= E)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_numba_kernel_matches_the_numpy_reference(batch, penalty):
    numba_sparse = pytest.importorskip("prosper.backends.numba_sparse")
    _, _, G, C = batch
    S0 = np.zeros_like(C)
    S_ref, n_ref = coordinate_descent(C, G, S0, penalty, 0.1, 200, 1e-6)
    S, n = numba_sparse.sparse_cd(C, G, S0, penalty, 0.1, 200, 1e-6)
    np.testing.assert_allclose(S, S_ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(n, n_ref)


@pytest.mark.parametrize("solver", ["cd", "fista"])
def test_a_rows_code_does_not_depend_on_its_batch(batch, solver):
    """Rows stop independently, so coding rows alone or together gives the same codes (what
    makes the result independent of the number of MPI ranks, up to the round-off of the
    GEMM Y W, which depends on the number of rows)."""
    Y, W, _, _ = batch
    coder = Coder(SparseCodingModel(20, 12, "l1/2", 0.1), solver=solver, max_iter=300)
    coder.set_dictionary(W)
    together = coder.code(Y)[0]
    apart = np.concatenate([coder.code(Y[:7])[0], coder.code(Y[7:])[0]])
    np.testing.assert_allclose(apart, together, rtol=0, atol=1e-12)


def test_cd_and_fista_agree_for_l1(batch):
    Y, W, _, _ = batch
    model = SparseCodingModel(20, 12, "l1", 0.1)
    codes = {}
    for solver in ("cd", "fista"):
        coder = Coder(model, solver=solver, max_iter=5000, tol=1e-12)
        coder.set_dictionary(W)
        codes[solver] = coder.code(Y)[0]
    np.testing.assert_allclose(codes["cd"], codes["fista"], atol=1e-6)


def test_bcd_update_minimises_the_surrogate_per_atom():
    """One BCD sweep lowers ½ tr(WᵀW A) − tr(WᵀB) over unit-norm columns, and an unused atom
    is replaced by the spare."""
    rng = np.random.default_rng(0)
    model = SparseCodingModel(6, 5, "l1", 0.1)
    S = rng.standard_normal((50, 6)) * (rng.random((50, 6)) < 0.4)
    S[:, 2] = 0.0  # atom 2 unused
    Y = rng.standard_normal((50, 5))
    A, B = S.T @ S, Y.T @ S
    W = model.normalize(rng.standard_normal((5, 6)), rng)

    def surrogate(W):
        return 0.5 * np.trace(W.T @ W @ A) - np.trace(W.T @ B)

    spare = rng.standard_normal(5)
    W_new, n_replaced = model.update_dictionary_bcd(A, B, W, spare)
    assert n_replaced == 1
    np.testing.assert_allclose(W_new[:, 2], spare / np.linalg.norm(spare))
    np.testing.assert_allclose(np.linalg.norm(W_new, axis=0), 1.0)
    assert surrogate(W_new) < surrogate(W)
    # the last column, set after all others, is the best unit vector given them
    h = 5
    target = B[:, h] - np.delete(W_new, h, axis=1) @ np.delete(A[:, h], h)
    np.testing.assert_allclose(W_new[:, h], target / np.linalg.norm(target), atol=1e-12)


@pytest.mark.parametrize("unused", [False, True])
def test_numba_dictionary_sweep_matches_the_model(unused):
    """The compiled sweep is the model's update (same atoms, same spare replacement)."""
    numba_sparse = pytest.importorskip("prosper.backends.numba_sparse")
    rng = np.random.default_rng(4)
    model = SparseCodingModel(24, 10, "l1", 0.1)
    S = rng.standard_normal((80, 24)) * (rng.random((80, 24)) < 0.3)
    if unused:
        S[:, [3, 7]] = 0.0  # two unused atoms: only the first is replaced
    Y = rng.standard_normal((80, 10))
    A, B = 0.7 * S.T @ S, 0.7 * Y.T @ S
    W = model.normalize(rng.standard_normal((10, 24)), rng)
    spare = rng.standard_normal(10)
    W_ref, n_ref = model.update_dictionary_bcd(A, B, W, spare)
    W_new, n_new = numba_sparse.sparse_bcd(A, B, W, spare)
    assert n_new == n_ref == int(unused)
    np.testing.assert_allclose(W_new, W_ref, rtol=0, atol=1e-12)
    if unused:
        np.testing.assert_array_equal(W_new[:, 7], W[:, 7])  # kept, not replaced


def _all_rows(plan: StratifiedBatches) -> np.ndarray:
    """Every mini-batch's row in every stratum, shape (M, S) (≥ n: no row there)."""
    return plan.rows(np.arange(plan.n_batches)[:, None], np.arange(plan.n_strata)[None, :])


@pytest.mark.parametrize(
    ("n", "batch_size"), [(1, 4), (2, 1), (5, 2), (64, 64), (1000, 7), (4097, 256)]
)
def test_stratified_batches_partition_the_rows_fixed_by_seed_and_pass(n, batch_size):
    plan = StratifiedBatches(n, batch_size, seed=3, iteration=1)
    M, S = plan.n_batches, plan.n_strata
    assert -(-n // batch_size) == M
    assert batch_size >= S
    rows = _all_rows(plan)
    # mini-batch k takes its row of stratum s from rows s·M .. s·M + M − 1
    assert np.all((rows >= np.arange(S) * M) & (rows < (np.arange(S) + 1) * M))
    # every row once per pass; sizes S or S − 1
    np.testing.assert_array_equal(np.sort(rows[rows < n]), np.arange(n))
    sizes = plan.sizes(np.arange(M))
    np.testing.assert_array_equal(sizes, (rows < n).sum(axis=1))
    assert sizes.sum() == n and sizes.min() >= S - 1
    # the spare row is one of the mini-batch's rows
    spares = plan.spare_rows(np.arange(M))
    assert np.all((rows == spares[:, None]).sum(axis=1) == 1)
    # pairs are mapped one by one: any subset gives the same rows
    np.testing.assert_array_equal(plan.rows(np.arange(M)[::-1], 0), rows[::-1, 0])
    np.testing.assert_array_equal(_all_rows(StratifiedBatches(n, batch_size, 3, 1)), rows)
    if M >= 16:
        assert not np.array_equal(_all_rows(StratifiedBatches(n, batch_size, 3, 2)), rows)
        assert not np.array_equal(_all_rows(StratifiedBatches(n, batch_size, 4, 1)), rows)


def test_stratified_batches_draw_from_the_whole_range_at_random():
    """Each mini-batch of a file sorted by class holds every part of it (one row per run of
    M rows), and which row of its run a mini-batch takes is uncorrelated between runs and
    between consecutive mini-batches."""
    n = 40000
    plan = StratifiedBatches(n, 200, seed=0, iteration=0)
    rows = _all_rows(plan)
    share = (rows < n // 2).sum(axis=1) / plan.sizes(np.arange(plan.n_batches))
    assert np.all(np.abs(share - 0.5) <= 1.0 / 200)
    within = rows % plan.n_batches  # the row's place in its run
    assert abs(np.corrcoef(within[:, :-1].ravel(), within[:, 1:].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(within[:-1].ravel(), within[1:].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(np.arange(plan.n_batches), within[:, 0])[0, 1]) < 0.2


class _FakeComm(Communicator):
    """Rank ``rank`` of ``size``, without MPI (for row_block)."""

    def __init__(self, rank: int, size: int) -> None:
        super().__init__(None)
        self.rank, self.size = rank, size


@pytest.mark.parametrize("n_ranks", [2, 3, 5])
def test_every_rank_holds_its_share_of_every_mini_batch(n_ranks):
    """Whatever the number of ranks, a rank's rows of each global mini-batch are its mean
    share (its rows over the number of mini-batches) to within fewer than 2 rows: no rank
    waits at the Allreduce for one that drew more. (Mini-batches drawn at random from all
    rows, as before, split binomially: about ±8 rows of 128 on two ranks.)"""
    model = SparseCodingModel(4, 3, "l1", 0.1)
    n_total = 20000
    for batch_size in (256, 1000):
        learner = OnlineSparseCoding(model, Coder(model), batch_size=batch_size, seed=0)
        learner.n_total = n_total
        shares, sizes = [], None
        for rank in range(n_ranks):
            block = row_block(n_total, _FakeComm(rank, n_ranks))
            n_local = block.stop - block.start
            got = list(learner._pass_batches(n_local, block.start, 1))
            share = np.array([idx.size for idx, _, _ in got])
            assert np.all(np.abs(share - n_local / len(got)) < 2), (rank, share)
            shares.append(share)
            sizes = [size for _, _, size in got]
        np.testing.assert_array_equal(np.sum(shares, axis=0), sizes)


def test_a_pass_order_holds_no_array_of_all_rows():
    """The mini-batches of a pass over 4 million rows are derived with memory bounded by
    the batch size (an index array of all rows alone would be 32 MB)."""
    model = SparseCodingModel(4, 3, "l1", 0.1)
    learner = OnlineSparseCoding(model, Coder(model), batch_size=4000, seed=0)
    learner.n_total = 4_000_000
    tracemalloc.start()
    try:
        n_mine = n_batches = 0
        for idx, _, size in learner._pass_batches(1_000_000, 2_000_000, 0):
            n_mine += idx.size
            n_batches += 1
            assert size == 4000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_batches == 1000 and n_mine == 1_000_000
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB"


def test_checkpoint_state_round_trip_and_shape_check():
    model = SparseCodingModel(4, 3, "l1", 0.1)
    learner = OnlineSparseCoding(model, Coder(model), batch_size=10, seed=0)
    Y = np.random.default_rng(0).standard_normal((40, 3))
    learner.initialize(Y, get_comm(None), np.random.default_rng(0), init="random")
    learner.estep(Y, get_comm(None), 0)
    state = learner.checkpoint_state()
    assert int(state["n_steps"]) == 4 and int(state["n_seen"]) == 40
    other = OnlineSparseCoding(model, Coder(model), batch_size=10, seed=0)
    other.set_state(state)
    np.testing.assert_array_equal(other.A, learner.A)
    with pytest.raises(ValueError, match="A"):
        OnlineSparseCoding(
            SparseCodingModel(5, 3, "l1", 0.1), Coder(model), batch_size=10, seed=0
        ).set_state(state)


def test_svd_start_is_the_principal_directions_then_random_atoms():
    # data with principal axes along the coordinates, variances 25 .. 0.25; model H = 8 > D = 5
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((600, 5)) * np.array([5.0, 4.0, 3.0, 2.0, 0.5])
    model = SparseCodingModel(8, 5, "l1", 0.1)
    learner = OnlineSparseCoding(model, Coder(model), batch_size=64, seed=0)
    learner.initialize(Y, get_comm(None), np.random.default_rng(0), init="svd")
    W = learner.params["W"]
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, atol=1e-12)
    # the first five atoms are the axes in order of variance, each with a positive sign
    np.testing.assert_allclose(W[:, :5], np.eye(5), atol=0.1)
    # the other three are random, not repeats of the principal directions
    assert np.abs(W[:, :5].T @ W[:, 5:]).max() < 0.99
    # streamed in batches of 64 rows: the same start as from one batch
    whole = OnlineSparseCoding(model, Coder(model), batch_size=600, seed=0)
    whole.initialize(Y, get_comm(None), np.random.default_rng(0), init="svd")
    np.testing.assert_allclose(whole.params["W"], W, atol=1e-12)


def _learners(penalty, batch_size=64, seed=3):
    """The same online learner with the compiled mini-batch and with the NumPy reference."""
    from prosper.backends import get_backend

    numba_backend = get_backend("numba")
    out = []
    for fused in (True, False):
        model = SparseCodingModel(20, 12, penalty, 0.1)
        coder = Coder(model, backend=numba_backend, tol=1e-6)
        assert coder.fused is not None
        if not fused:
            coder.fused = None
        out.append(OnlineSparseCoding(model, coder, batch_size=batch_size, seed=seed))
    return out


@pytest.mark.parametrize("penalty", PENALTIES)
def test_compiled_mini_batch_matches_the_numpy_reference(batch, penalty):
    """One mini-batch: codes and increments (one call), then forgetting, sweep and WᵀW (the
    other), as the NumPy reference computes them, up to round-off."""
    pytest.importorskip("numba")
    Y = batch[0]
    fused, ref = _learners(penalty)
    comm = get_comm(None)
    for learner in (fused, ref):
        learner.initialize(Y, comm, np.random.default_rng(0), init="random")
        learner.estep(Y, comm, 0)  # statistics and a dictionary from a pass
    idx, spare_row = np.arange(3, 290, 2), 41  # a spare from the middle of the mini-batch
    run = fused._fused_start(Y)
    fused._code_fused(Y, idx, spare_row, run)
    local = dict.fromkeys(("energy", "sq_error", "sq_norm", "n_nonzero", "coder_iter", "n"), 0.0)
    ref.coder.set_dictionary(ref.params["W"])
    inc = ref._code_local(Y, idx, spare_row, local)
    n_a = 20 * 21 // 2
    np.testing.assert_allclose(run.inc[:n_a], inc["A"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(run.inc[n_a:-12].reshape(12, 20), inc["B"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(run.inc[-12:], inc["spare"], rtol=0, atol=1e-12)
    assert np.abs(run.inc[-12:]).max() > 0  # the spare row was found
    np.testing.assert_allclose(run.sums, list(local.values()), rtol=1e-12)

    replaced = fused._update_fused(run.inc, idx.size, Y.shape[0], run)
    assert replaced == ref._update(inc, idx.size, Y.shape[0])
    W = ref.params["W"]
    np.testing.assert_allclose(fused.A, ref.A, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fused.B, ref.B, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fused.params["W"], W, rtol=0, atol=1e-11)
    np.testing.assert_allclose(run.Wt, W.T, rtol=0, atol=1e-11)
    np.testing.assert_allclose(run.G, W.T @ W, rtol=0, atol=1e-11)


@pytest.mark.parametrize("penalty", ["l1", "l0"])
def test_compiled_passes_learn_the_reference_dictionary(batch, penalty):
    """Two passes of 64-row mini-batches: the same dictionary, statistics and metrics as
    the NumPy reference, and the same from rows read in place or copied out (a Fortran-
    ordered array is read through take_rows)."""
    pytest.importorskip("numba")
    Y = batch[0]
    comm = get_comm(None)
    runs = []
    for learner, data in zip(
        _learners(penalty) + _learners(penalty)[:1], [Y, Y, np.asfortranarray(Y)], strict=True
    ):
        learner.initialize(data, comm, np.random.default_rng(0), init="random")
        stats = [learner.estep(data, comm, it) for it in range(2)]
        runs.append((learner, stats[-1]))
    (fused, f_stats), (ref, r_stats), (copied, c_stats) = runs
    np.testing.assert_allclose(fused.params["W"], ref.params["W"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.A, ref.A, rtol=0, atol=1e-10)
    for key in r_stats:
        np.testing.assert_allclose(f_stats[key], r_stats[key], rtol=1e-10)
    np.testing.assert_array_equal(copied.params["W"], fused.params["W"])
    assert float(c_stats["energy"]) == float(f_stats["energy"])
    assert fused.n_steps == ref.n_steps == 2 * 5


def test_compiled_coding_is_the_same_on_any_number_of_threads(batch):
    """The threaded and the serial kernel give identical numbers (each point is coded alone;
    the sums run over the points in order), so numba's thread count never changes a fit."""
    numba_sparse = pytest.importorskip("prosper.backends.numba_sparse")
    Y, W, G, _ = batch
    W = np.ascontiguousarray(W)
    rows = np.arange(0, 300, 3, dtype=np.int64)
    out = {}
    for kernel in (numba_sparse._code_stats_parallel, numba_sparse._code_stats_serial):
        inc, sums = np.zeros(20 * 21 // 2 + 12 * 20 + 12), np.zeros(6)
        kernel(Y, rows, W, np.ascontiguousarray(W.T), G, 1, 0.1, 200, 1e-6, 5, inc, sums)
        out[kernel] = (inc, sums)
    (a, sa), (b, sb) = out.values()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_a_ranks_mini_batches_are_its_rows_of_the_global_ones():
    """Per global mini-batch a rank gets the rows of it that it holds (local indices,
    increasing), the mini-batch's spare row and its size, whatever the block."""
    model = SparseCodingModel(4, 3, "l1", 0.1)
    for n_total, eta, offset, n_local in [(5000, 64, 2000, 1500), (300, 7, 0, 300), (9, 4, 5, 0)]:
        learner = OnlineSparseCoding(model, Coder(model), batch_size=eta, seed=5)
        learner.n_total = n_total
        plan = StratifiedBatches(n_total, eta, 5, 2)
        batches = _all_rows(plan) - offset
        got = list(learner._pass_batches(n_local, offset, 2))
        assert len(got) == -(-n_total // eta)
        for j, (idx, spare, size) in enumerate(got):
            rows = batches[j][batches[j] < n_total - offset]
            np.testing.assert_array_equal(idx, rows[(rows >= 0) & (rows < n_local)])
            assert np.all(np.diff(idx) > 0)
            assert (spare, size) == (plan.spare_rows(np.array([j]))[0] - offset, rows.size)
