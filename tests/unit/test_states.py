"""Candidate state sets of Expectation Truncation."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from prosper.solvers.states import ExpectationTruncation, count_states


@pytest.mark.parametrize(
    ("H", "Hprime", "gamma", "values"),
    [(10, 6, 3, (0, 1)), (20, 8, 4, (0, 1)), (6, 4, 2, (0, -1, 1)), (5, 3, 3, (0, 1, 2, 3))],
)
def test_state_count_and_content(H, Hprime, gamma, values, rng):
    states = ExpectationTruncation(H, Hprime, gamma, values)
    V = len(values)
    expected = 1 + (V - 1) * H + sum(comb(Hprime, k) * (V - 1) ** k for k in range(2, gamma + 1))
    assert states.n_states == expected == count_states(H, Hprime, gamma, V)
    scores = rng.normal(size=(4, H))
    batch = states.select(scores, 4)
    S = batch.dense()
    assert S.shape == (4, expected, H)
    for n in range(4):
        top = set(np.argsort(-scores[n])[:Hprime])
        assert set(batch.I[n]) == top
        rows = {tuple(s) for s in S[n]}
        assert len(rows) == expected  # no duplicates
        nonzero = (S[n] != 0).sum(axis=1)
        assert nonzero.max() <= gamma
        multi = S[n][nonzero >= 2]
        assert np.all(np.isin(np.flatnonzero(multi.any(axis=0)), list(top)))


def test_full_enumeration_is_all_states():
    states = ExpectationTruncation(4, 4, 4, (0, 1))
    S = states.select(None, 2).dense()
    assert {tuple(s) for s in S[0]} == set(itertools.product([0.0, 1.0], repeat=4))


def test_ties_are_broken_by_index():
    states = ExpectationTruncation(6, 3, 2, (0, 1))
    batch = states.select(np.zeros((1, 6)), 1)
    np.testing.assert_array_equal(batch.I[0], [0, 1, 2])


def test_gamma_one_has_no_table():
    """gamma = 1: zero and singleton states only (the table is empty)."""
    states = ExpectationTruncation(5, 3, 1, (0, 1))
    assert states.n_states == 6 and states.outer.shape == (0, 9)
    from prosper import BSC
    from prosper.data import bars

    data = bars(size=2, n_samples=50, random_state=0)
    model = BSC(H=4, Hprime=3, gamma=1, n_iter=3, random_state=0).fit(data.Y)
    assert model.transform(data.Y).shape == (50, 4)


def test_top_indices_match_a_stable_sort(rng):
    """The partial selection equals the stable sort, ties at the k-th place included."""
    from prosper.solvers.states import _top_indices

    scores = rng.integers(0, 4, size=(500, 12)).astype(float)  # many ties
    scores[:250] += rng.normal(scale=1e-3, size=(250, 12))  # and rows without ties
    for k in (1, 5, 11, 12):
        expected = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :k], axis=1)
        np.testing.assert_array_equal(np.sort(_top_indices(scores, k), axis=1), expected)
