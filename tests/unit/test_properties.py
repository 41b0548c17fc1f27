"""Property-based tests (hypothesis): prox operators, state tables, Kronecker operators and
the row partition hold for every input drawn, not only for hand-picked ones."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prosper.models.sbl import kron_matvec, kron_vectors  # noqa: E402
from prosper.models.sparse_coding import penalty_value  # noqa: E402
from prosper.parallel import Communicator, row_block  # noqa: E402
from prosper.solvers.prox import PROX  # noqa: E402
from prosper.solvers.states import ExpectationTruncation, count_states  # noqa: E402

FAST = settings(max_examples=60, deadline=None, derandomize=True)
reals = functools.partial(st.floats, allow_nan=False, allow_infinity=False)
GRID = np.linspace(-20.0, 20.0, 40001)


@FAST
@given(
    penalty=st.sampled_from(sorted(PROX)),
    x=reals(-12.0, 12.0),
    step=reals(0.01, 2.0),
    lam=reals(0.01, 3.0),
    a=reals(0.2, 3.0),
)
def test_prox_minimises_its_objective(penalty, x, step, lam, a):
    """prox_{step ψ}(x) = argmin_u ½(u − x)² + step ψ(u): no point of a fine grid does better."""

    def objective(u):
        u = np.atleast_1d(np.asarray(u, dtype=np.float64))
        psi = penalty_value(u[None, :], penalty, lam, np.full(u.size, a))[0]
        return 0.5 * (u - x) ** 2 + step * psi

    u_star = float(PROX[penalty](np.array([x]), step, lam, np.array([a]))[0])
    best = float(objective(GRID).min())
    assert objective(u_star)[0] <= best + 1e-9 * max(1.0, abs(best))


@FAST
@given(
    H=st.integers(1, 9),
    data=st.data(),
    values=st.sampled_from([(0, 1), (0, -1, 1), (0, 1, 2), (0, 0.5, 2, 3)]),
)
def test_state_tables_are_duplicate_free_and_sized_as_counted(H, data, values):
    Hprime = data.draw(st.integers(1, H), label="Hprime")
    gamma = data.draw(st.integers(1, Hprime), label="gamma")
    states = ExpectationTruncation(H, Hprime, gamma, values)
    n = count_states(H, Hprime, gamma, len(values))
    assert states.n_states == n
    rows = 3
    scores = np.random.default_rng(H * 100 + Hprime).normal(size=(rows, H))
    dense = states.select(scores, rows).dense()
    assert dense.shape == (rows, n, H)
    for b in range(rows):
        assert np.unique(dense[b], axis=0).shape[0] == n  # no duplicates
    active = np.count_nonzero(states.table, axis=1)
    assert ((active >= 2) & (active <= gamma)).all()
    # every multi-latent pattern over the H' slots appears: the table is the whole set
    expected = sum(math.comb(Hprime, k) * (len(values) - 1) ** k for k in range(2, gamma + 1))
    assert states.table.shape == (expected, Hprime)


@FAST
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_kronecker_operators_equal_the_dense_product(shapes, batch, seed):
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=shape) for shape in shapes]
    X = rng.normal(size=(batch, int(np.prod([c for _, c in shapes]))))
    dense = functools.reduce(np.kron, mats)
    np.testing.assert_allclose(kron_matvec(mats, X), X @ dense.T, rtol=1e-12, atol=1e-12)
    vectors = [rng.normal(size=c) for _, c in shapes]
    np.testing.assert_array_equal(kron_vectors(vectors), functools.reduce(np.kron, vectors))


@FAST
@given(n=st.integers(0, 5000), size=st.integers(1, 64))
def test_row_partition_every_row_once_in_rank_order(n, size):
    blocks = []
    for rank in range(size):
        comm = Communicator()
        comm.rank, comm.size = rank, size
        blocks.append(row_block(n, comm))
    rows = np.concatenate([np.arange(n)[b] for b in blocks])
    np.testing.assert_array_equal(rows, np.arange(n))  # every row once, in rank order
    lengths = [b.stop - b.start for b in blocks]
    assert max(lengths) - min(lengths) <= 1
