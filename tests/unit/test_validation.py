"""Bad input fails early, with an error naming the culprit."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import BSC, NotFittedError
from prosper.data import bars


@pytest.fixture
def Y(rng):
    return rng.normal(size=(50, 9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"H": 0}, "'H' parameter of BSC must be an int in the range \\[1, inf\\]"),
        ({"H": 2.5}, "'H' parameter"),
        ({"H": 4, "Hprime": 5}, "Hprime must be <= H \\(=4\\); got Hprime=5"),
        ({"H": 6, "Hprime": 3, "gamma": 4}, "gamma must be <= Hprime \\(=3\\); got gamma=4"),
        ({"n_iter": 0}, "'n_iter' parameter"),
        ({"batch_size": -1}, "'batch_size' parameter"),
        ({"backend": "torch"}, "'backend' parameter of BSC must be one of"),
        ({"init": "zeros"}, "'init' parameter"),
        ({"dtype": "int32"}, "'dtype' parameter"),
        ({"temperature": [[0, 0.5]]}, "temperature: values must lie in \\[1.0"),
        ({"temperature": [[1.5, 2.0]]}, "fraction of the run in \\[0, 1\\]"),
        ({"temperature": "hot"}, "'temperature' parameter"),
        ({"ncut_factor": 2.0}, "ncut_factor: values must lie in \\[0.0, 1.0\\]"),
        ({"noise": [[10, 0.1], [5, 0.0]]}, "positions must not decrease"),
        ({"random_state": -3}, "'random_state' parameter"),
    ],
)
def test_bad_hyper_parameters(Y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BSC(**{"H": 4, "n_iter": 2, **kwargs}).fit(Y)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinity \\(first at row 0, column 1\\)"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinity"),
        (np.ones(5), "must be 2-D.*reshape\\(1, -1\\)"),
        (np.ones((2, 3, 4)), "must be 2-D"),
        (np.array([["a", "b"]]), "must hold real numbers; got dtype <U1"),
        (np.array([[object(), 1]], dtype=object), "must hold real numbers"),
        (np.ones((3, 2), dtype=complex), "real-valued"),
        ("data.npy", "must be a 2-D numeric array"),
        (np.ones((4, 0)), "no columns"),
        (np.array(3.0), "must be 2-D with shape \\(N, D\\)"),
        (np.zeros((0, 4)), "Y has no rows \\(N=0\\)"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        BSC(H=2, n_iter=1).fit(data)


def test_transposed_data_is_flagged(rng, caplog):
    import logging

    # attach directly: an in-process CLI run may have stopped 'prosper' from propagating
    logger = logging.getLogger("prosper")
    logger.addHandler(caplog.handler)
    try:
        BSC(H=2, n_iter=1, random_state=0).fit(rng.normal(size=(5, 40)))
    finally:
        logger.removeHandler(caplog.handler)
    assert "fewer data points than dimensions (N=5, D=40)" in caplog.text


def test_integer_data_is_cast(rng):
    Y = rng.integers(0, 5, size=(30, 4))
    model = BSC(H=2, n_iter=2, random_state=0).fit(Y)
    assert model.W_.dtype == np.float64


def test_not_fitted(Y):
    model = BSC(H=3)
    for call in (lambda: model.transform(Y), lambda: model.score(Y), lambda: model.sample(3)):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_transform_checks_features(Y):
    model = BSC(H=3, n_iter=2, random_state=0).fit(Y)
    with pytest.raises(ValueError, match="has 4 features .* fitted with 9"):
        model.transform(Y[:, :4])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0}, "'sigma' parameter of bars"),
        ({"pi": 0.0}, "'pi' parameter of bars"),
        ({"pi": 1.5}, "'pi' parameter of bars"),
        ({"amplitude": 0.0}, "'amplitude' parameter of bars"),
        ({"size": 0}, "'size' parameter of bars"),
        ({"combine": "min"}, "'combine' parameter of bars"),
    ],
)
def test_bad_generator_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bars(**kwargs)


def test_get_set_params_and_clone():
    model = BSC(H=7, gamma=2, temperature=[[0, 3.0], [0.5, 1.0]])
    params = model.get_params()
    assert params["H"] == 7 and params["gamma"] == 2 and params["Hprime"] is None
    assert model.set_params(H=9) is model and model.H == 9
    with pytest.raises(ValueError, match="Invalid parameter 'Hprim'"):
        model.set_params(Hprim=3)
    sklearn_base = pytest.importorskip("sklearn.base")
    clone = sklearn_base.clone(model)
    assert clone.get_params() == model.get_params() and clone is not model
    assert "H=9" in repr(model) and "gamma=2" in repr(model)
