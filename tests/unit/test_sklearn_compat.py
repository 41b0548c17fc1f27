"""scikit-learn compatibility: Pipeline, GridSearchCV and scikit-learn's own estimator checks.

Skipped cleanly when scikit-learn is not installed (it is an optional extra). SBL and
KroneckerSBL are not run through the generic checks: their measurement dictionary fixes the
number of features, and the checks fit on data of many widths.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from prosper import BSC, DSC, GSC, MCA, MMCA, SBL, TSC, SparseCoding  # noqa: E402

#: tiny runs: the checks fit dozens of times on data of a few hundred rows. One estimator per
#: learner and model family (TSC and DSC share BSC's estimator code, MMCA MCA's; the
#: interface tests below cover them)
_TINY = {"n_iter": 2, "backend": "numpy", "random_state": 0}
ESTIMATORS = [
    BSC(H=3, **_TINY),
    MCA(H=3, **_TINY),
    GSC(H=3, **_TINY),
    SparseCoding(H=3, n_iter=2, max_iter=20, random_state=0),
]

#: checks that do not apply, with the reason (shown as xfail in the test report)
_ALL_MODELS = {
    "check_n_features_in_after_fitting": (
        "ProSper's message names the data Y and says 'Y has 1 features (columns) but the model "
        "was fitted with 4'; the check wants scikit-learn's exact 'X has ... is expecting' text"
    ),
    "check_complex_data": (
        "complex data are refused with 'Y must be real-valued; got complex dtype', not "
        "scikit-learn's 'Complex data not supported' wording"
    ),
    "check_dtype_object": (
        "object arrays are refused with a message asking for np.asarray(Y, dtype=float) "
        "instead of being converted silently"
    ),
    "check_estimators_empty_data_messages": (
        "data with no columns are refused with 'Y has no columns (shape (12, 0))', not "
        "scikit-learn's '0 feature(s)' wording"
    ),
    "check_fit2d_predict1d": (
        "1-D input is refused with 'Y must be 2-D ... Use Y.reshape(1, -1)', not scikit-learn's "
        "'Reshape your data' wording"
    ),
    "check_transformer_preserve_dtypes": (
        "the computation dtype is the estimator's dtype= hyper-parameter (default float64, as "
        "documented); dtype='float32' keeps float32 end to end"
    ),
}
_PER_MODEL: dict[str, dict[str, str]] = {}


def _expected_failures(estimator) -> dict[str, str]:
    return {**_ALL_MODELS, **_PER_MODEL.get(type(estimator).__name__, {})}


with warnings.catch_warnings():
    # "does not inherit from sklearn.base.BaseEstimator": by design, scikit-learn is optional
    warnings.simplefilter("ignore", UserWarning)
    _checks = parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)


@_checks
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def _bars(n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    W = np.zeros((9, 6))
    for h in range(3):
        W[3 * h : 3 * h + 3, h] = 5.0
        W[h::3, 3 + h] = 5.0
    S = rng.random((n, 6)) < 0.2
    return S @ W.T + rng.normal(size=(n, 9))


def test_in_a_pipeline():
    Y = _bars()
    pipe = Pipeline([("scale", StandardScaler()), ("bsc", BSC(H=6, **_TINY))])
    codes = pipe.fit_transform(Y)
    assert codes.shape == (200, 6)
    np.testing.assert_allclose(codes, pipe.transform(Y))
    assert np.isfinite(pipe.score(Y))


@pytest.mark.parametrize("cls", [BSC, TSC, DSC, MCA, MMCA, GSC])
def test_fit_accepts_y_and_fit_transform_equals_fit_then_transform(cls):
    Y = _bars()
    kw = {"values": (0.0, 1.0, 2.0)} if cls is DSC else {}
    a = cls(H=6, **kw, **_TINY).fit_transform(Y, np.zeros(len(Y)))
    b = cls(H=6, **kw, **_TINY).fit(Y, None).transform(Y)
    np.testing.assert_allclose(a, b)
    assert np.isfinite(cls(H=6, **kw, **_TINY).fit(Y).score(Y, np.zeros(len(Y))))


def test_grid_search_picks_by_free_energy():
    Y = _bars()
    search = GridSearchCV(BSC(**_TINY), {"H": [1, 6]}, cv=2).fit(Y)
    # six bars explain held-out data far better than one
    assert search.best_params_ == {"H": 6}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0]


def test_sbl_in_a_pipeline():
    rng = np.random.default_rng(1)
    Phi = rng.normal(size=(12, 20))
    X = np.zeros((5, 20))
    X[:, [2, 7]] = rng.normal(size=(5, 2)) * 3
    Y = X @ Phi.T + 0.01 * rng.normal(size=(5, 12))
    pipe = Pipeline([("sbl", SBL(Phi, n_iter=5))])
    assert pipe.fit_transform(Y).shape == (5, 20)
