"""Sizes that set an allocation are checked against a memory estimate before any work."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import BSC, GSC, SBL, KroneckerSBL, SparseCoding
from prosper.data import bars, get_generator
from prosper.solvers.states import ExpectationTruncation
from prosper.utils.validation import check_memory, parse_memory


@pytest.fixture(scope="module")
def Y():
    return bars(size=3, n_samples=40, random_state=0).Y


def test_parse_memory():
    assert parse_memory(None) is None
    assert parse_memory(1024) == 1024
    assert parse_memory("8GB") == 8 * 10**9
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5k") == 1500
    for bad in ("lots", "-1GB", 0, "8 XB", True):
        with pytest.raises(ValueError, match="max_memory"):
            parse_memory(bad)


def test_check_memory_gives_the_estimate():
    assert check_memory("x", {"a": 10, "b": 20}, max_memory=30) == 30
    with pytest.raises(ValueError, match=r"x would need about 31 B of memory \(a 11 B, b 20 B\)"):
        check_memory("x", {"a": 11, "b": 20}, max_memory=30)


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (BSC(H=10**9), "BSC would need about"),
        (BSC(H=40, Hprime=40, gamma=40), "state table"),
        (GSC(H=30, Hprime=30, gamma=30), "GSC would need about"),
        (SparseCoding(H=10**10), "SparseCoding would need about .*dictionary"),
        (BSC(H=6, max_memory="1kB"), "max_memory='1kB'"),
        (SBL(dictionary=np.ones((9, 4)), max_memory=100), "SBL would need about"),
        (KroneckerSBL(factors=[np.ones((3, 2)), np.ones((3, 2))], max_memory=100), "factors"),
    ],
)
def test_fit_refuses_what_cannot_fit_before_any_work(Y, estimator, message):
    # refused from the estimate: a real allocation of these sizes would end in MemoryError
    with pytest.raises(ValueError, match=message):
        estimator.set_params(n_iter=1).fit(Y)


def test_a_fit_within_the_limit_runs(Y):
    model = BSC(H=6, n_iter=2, backend="numpy", max_memory="1GB", random_state=0).fit(Y)
    assert model.W_.shape == (9, 6)


def test_evolutionary_states_are_counted_as_stored():
    """A bit per latent for binary latents, a byte otherwise; rank 0 of several ranks also
    holds the checkpoint's copy of every row."""
    from prosper import TSC

    needs = BSC(H=300, states="evo", n_states=32)._memory_needs(256, 50000)
    assert needs["evolutionary states"] == 50000 * 32 * 38
    rank0 = BSC(H=300, states="evo", n_states=32)._memory_needs(256, 50000, 100000)
    assert rank0["evolutionary states"] == 150000 * 32 * 38
    assert TSC(H=20, states="evo", n_states=8)._memory_needs(9, 100)["evolutionary states"] == (
        100 * 8 * 20
    )


def test_state_table_is_counted_before_it_is_built():
    with pytest.raises(ValueError, match="state table for Hprime=40, gamma=40"):
        ExpectationTruncation(40, 40, 40, (0, 1))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("bars", {"n_samples": 10**12}),
        ("sparse_dictionary", {"n_samples": 10**12}),
        ("gsc_data", {"n_samples": 10**12}),
        ("kronecker_problem", {"shapes": [(10**5, 10**5), (10**5, 10**5)]}),
        ("natural_patches", {"n_samples": 10**12}),
    ],
)
def test_generators_refuse_sizes_beyond_memory(name, kwargs):
    with pytest.raises(ValueError, match="would need about .* nothing was allocated"):
        get_generator(name)(**kwargs, random_state=0)
