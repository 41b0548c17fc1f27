"""Shared fitting machinery of every estimator: validation, seeding, resume, results file.

:class:`EMEstimator` implements ``fit`` once for all models on top of the EM driver; a
model's estimator gives its learner (:meth:`EMEstimator._make_learner`) and parameter
constraints. :class:`TruncatedEMEstimator` adds what all discrete-latent models share.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from prosper.backends import get_backend
from prosper.backends.evolution import REFERENCE as EVO_REFERENCE
from prosper.backends.numpy_backend import BATCH_POINTS
from prosper.base import BaseEstimator
from prosper.exceptions import ConfigError
from prosper.io.config import dump_toml
from prosper.io.results import ResultWriter, encode_params, read_checkpoint, read_history
from prosper.io.sources import as_source
from prosper.models.base import backend_kernel
from prosper.parallel import Communicator, get_comm
from prosper.solvers.annealing import Schedule
from prosper.solvers.em import run_em
from prosper.solvers.evolutionary import EvolutionaryStates, SearchSettings
from prosper.solvers.states import ExpectationTruncation, count_states
from prosper.solvers.truncated import Annealing, TruncatedEM
from prosper.threads import rank_threads
from prosper.utils.validation import (
    Interval,
    Options,
    check_data,
    check_is_fitted,
    check_memory,
    check_random_state,
    check_source,
    is_memory_size,
    validate_params,
)

log = logging.getLogger(__name__)

__all__ = ["EMEstimator", "TruncatedEMEstimator"]

DTYPES = ("float64", "float32")
#: σ below this fraction of the data's RMS is reported as collapsed (degenerate fit)
SIGMA_FLOOR = 1e-4
#: ET data selection keeping fewer than this share of the points (or fewer than H) is reported
NCUT_FRACTION = 0.25
#: a dictionary element whose total |<s_h>| is below this fraction of the most used one's is
#: reported as unused
UNUSED_FRACTION = 1e-6
#: estimator arguments that are not hyper-parameters of the model (not compared on resume)
RUNTIME_PARAMS = ("comm", "callback", "progress", "backend", "batch_size", "max_memory")
#: bytes of one float64
_F8 = 8


def _schedule_like(value: Any) -> bool:
    """None, a number or a list of [position, value] pairs"""
    return value is None or isinstance(value, (int, float, list, tuple))


def _dtype_name(dtype: Any) -> str | None:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return None
    return name if name in DTYPES else None


def _is_dtype(value: Any) -> bool:
    """'float64' or 'float32' (or the numpy dtypes)"""
    return _dtype_name(value) is not None


class EMEstimator(BaseEstimator):
    """Base of the estimators learned by the shared EM driver.

    Subclasses define ``_parameter_constraints``, ``_fitted_names`` (learned parameters,
    stored as ``<name>_``), :meth:`_check_params` for cross-parameter rules and
    :meth:`_make_learner`. Every subclass accepts the keyword arguments ``n_iter``,
    ``backend``, ``dtype``, ``random_state``, ``comm``, ``callback`` and ``progress``.
    """

    _parameter_constraints: dict[str, list] = {
        "n_iter": [Interval("int", 1, None)],
        "batch_size": [Interval("int", 1, None)],
        "backend": [Options(("auto", "numpy", "numba", "cupy"))],
        "dtype": [_is_dtype],
        "random_state": [None, Interval("int", 0, None), np.random.Generator],
        "progress": [None, bool],
        "max_memory": [is_memory_size],
    }
    _fitted_names: tuple[str, ...] = ()
    #: rows are independent data points, so N < D hints at transposed data (SBL: snapshots,
    #: where few rows are normal)
    _rows_are_points = True

    # -- to be provided by subclasses -------------------------------------------------
    def _check_params(self, D: int) -> None:
        """Cross-parameter checks once D is known (raise ValueError)."""

    def _make_learner(self, D: int, seed: int, backend):
        raise NotImplementedError

    def _memory_needs(self, D: int, n_local: int, n_gathered: int = 0) -> dict[str, int]:
        """Estimated bytes of what a fit allocates on one rank, by item (before any of it is
        allocated); Python ints, so that absurd sizes are compared exactly. ``n_gathered``:
        the rows whose per-row state this rank gathers for the checkpoint (rank 0 of a run
        on several ranks: all of them)."""
        return {}

    #: what to lower when the estimate is too large (appended to the error message)
    _memory_advice = "Lower batch_size or the model size, or raise max_memory."

    def _check_memory(self, D: int, n_local: int, n_gathered: int = 0) -> None:
        check_memory(
            type(self).__name__,
            self._memory_needs(D, n_local, n_gathered),
            max_memory=self.max_memory,
            advice=self._memory_advice,
        )

    @property
    def _read_rows(self) -> int:
        """Rows per block when the data are read outside the E-step (checks, checksums)."""
        return int(getattr(self, "batch_size", None) or BATCH_POINTS)

    # -- fitting -----------------------------------------------------------------------
    def _validate(self) -> None:
        constraints: dict[str, list] = {}
        for cls in reversed(type(self).__mro__):
            constraints.update(getattr(cls, "_parameter_constraints", {}))
        validate_params(type(self).__name__, self.get_params(), constraints)

    def _comm(self) -> Communicator:
        return get_comm(self.comm)

    def _seed(self, comm: Communicator) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        rng = check_random_state(self.random_state)
        return int(comm.bcast(int(rng.integers(2**62))))

    def fit(
        self,
        Y: Any,
        y: Any = None,
        *,
        out: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        allow_symlink: bool = False,
    ) -> EMEstimator:
        """Learn the model from data.

        Parameters
        ----------
        Y : array-like, numpy.memmap, h5py.Dataset or DataSource of shape (N, D)
            Data, one row per data point. Under MPI each rank passes its own rows (rows are
            contiguous blocks in rank order; see :func:`prosper.parallel.row_block`). The
            rows are read ``batch_size`` at a time and converted to ``dtype`` block by
            block, so a memory map, an HDF5 dataset or a
            :func:`prosper.io.sources.open_source` over a rank's block of a file is streamed
            from disk: memory is bounded by ``batch_size``, not by N.
        y : None
            Ignored: the models are unsupervised (accepted so that estimators sit in a
            scikit-learn ``Pipeline`` or ``GridSearchCV``).
        out : str or path-like, optional
            HDF5 result file (written by rank 0, flushed every iteration).
        resume : bool, default=False
            Continue the run stored in ``out`` from its checkpoint.
        overwrite : bool, default=False
            Replace an existing ``out`` file.
        allow_symlink : bool, default=False
            Accept an ``out`` that is a symbolic link (its target is written); without it a
            link is refused, so a link planted in a shared folder cannot redirect the write.

        Returns
        -------
        self

        Notes
        -----
        ``resume=True`` with a larger ``n_iter`` than the stored run extends it (schedules
        given as fractions then span the new length; the file's ``extensions`` attribute
        records it); any other change of hyper-parameters is refused. Degenerate outcomes
        (σ collapsed, ET data selection down to a handful of points, unused dictionary
        elements) are logged as warnings and kept in ``warnings_`` and in the file. Threads
        per rank are set for the duration of the fit by :mod:`prosper.threads`.
        """
        return self._fit(
            Y, out=out, resume=resume, overwrite=overwrite, allow_symlink=allow_symlink
        )

    def fit_transform(self, Y: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit to ``Y``, then return ``transform(Y)``.

        Parameters
        ----------
        Y : array-like of shape (N, D)
        y : None
            Ignored.
        **fit_params
            ``out``, ``resume``, ``overwrite`` as for :meth:`fit`.

        Returns
        -------
        ndarray of shape (N, H)
            The latents of ``Y`` under the fitted model (see ``transform``).
        """
        return self.fit(Y, y, **fit_params).transform(Y)

    def _fit(
        self,
        Y: Any,
        *,
        out=None,
        resume=False,
        overwrite=False,
        allow_symlink: bool = False,
        input_paths: tuple = (),
        config_text: str | None = None,
        ground_truth: dict | None = None,
    ) -> EMEstimator:
        comm = self._comm()
        comm.agree(_error_of(self._validate))  # every rank raises, none waits
        # streamed: checked block by block and read batch by batch, never copied whole
        Y = check_source(Y, comm=comm, dtype=_dtype_name(self.dtype), batch_size=self._read_rows)
        D = Y.shape[1]
        n_total = comm.allreduce(int(Y.shape[0]))
        if self._rows_are_points and n_total < D:
            log.warning(
                "%s: fewer data points than dimensions (N=%d, D=%d); Y takes one row per data "
                "point: did you pass Y.T?",
                type(self).__name__,
                n_total,
                D,
            )
        comm.agree(_error_of(self._check_params, D))
        # every allocation that grows with H, D, the state count or batch_size is estimated
        # before any of it is made
        # rank 0 of several ranks gathers per-row state for the checkpoint of a result file
        n_gathered = n_total if out is not None and comm.size > 1 and comm.rank == 0 else 0
        comm.agree(_error_of(self._check_memory, D, int(Y.shape[0]), n_gathered))
        backend = get_backend(self.backend)
        seed = self._seed(comm)
        if not resume:
            seed = self._chosen_seed(Y, comm, D, seed)
        learner = self._make_learner(D, seed, backend)
        backend = getattr(learner, "backend", backend)
        chosen = comm.allgather(backend.NAME)
        if len(set(chosen)) > 1:
            # e.g. "auto" on nodes with and without a GPU: the ranks would compute different
            # round-off and the GPU ranks would wait in select_device for the others
            raise ValueError(
                f"the MPI ranks chose different backends ({', '.join(sorted(set(chosen)))}) "
                f"for backend={self.backend!r}; set backend= to one that every node has."
            )
        # one GPU per rank: local rank modulo the visible devices (collective; a no-op on
        # the CPU backends)
        backend.select_device(comm)
        writer = None
        if out is not None:
            writer = ResultWriter(
                out,
                comm,
                attrs=self._file_attrs(config_text, comm, Y),
                resume=resume,
                overwrite=overwrite,
                allow_symlink=allow_symlink,
                inputs=input_paths,
            )
        elif resume:
            raise ValueError("resume=True needs out= naming the result file to continue.")
        if ground_truth:
            # compared with /model, so stored in the same gauge
            with contextlib.suppress(KeyError, ValueError):
                ground_truth = self._canonical(learner, dict(ground_truth))
        start = 0
        if resume:
            start, seed = self._resume(out, learner, writer, comm, Y)
        else:
            learner.initialize(Y, comm, np.random.default_rng(seed), **self._init_kwargs())
            if writer is not None:
                writer.start(learner.params, seed, ground_truth)
        has_kernel = getattr(getattr(learner, "model", None), "runs_on", lambda _: True)(backend)
        log.info(
            "%s: N=%d over %d rank(s), D=%d, %d iterations from %d, backend %s",
            type(self).__name__,
            learner.n_total,
            comm.size,
            D,
            self.n_iter,
            start,
            backend.NAME
            if has_kernel
            else f"numpy (the model's own E-step: {backend.NAME} has no kernel for it)",
        )
        if backend.NAME == "numba" and has_kernel and comm.rank == 0:
            from prosper.backends.numba_backend import needs_compiling

            if needs_compiling():
                log.info("compiling kernels (once, about a minute; cached for later runs)")
        with rank_threads(comm, backend.NAME if has_kernel else "numpy"):
            history = run_em(
                learner,
                Y,
                comm,
                n_iter=self.n_iter,
                start=start,
                recorder=writer,
                callback=self._stop_callback(),
                progress=self.progress,
            )
            self._finish(learner, Y, comm)
        if resume and writer.active:
            # the whole run's trace, not only the iterations after the checkpoint
            history = {k: list(v) for k, v in read_history(out).items()}
        history = comm.bcast(history)
        n_done = len(history.get("free_energy", []))
        final = self._canonical(learner, learner.params)
        attrs = {"n_iter": n_done, "n_samples": learner.n_total, "seed": seed}
        self._set_fitted(final, history, attrs)
        with rank_threads(comm, backend.NAME if has_kernel else "numpy"):
            found = self._degenerate(Y, comm, learner.n_total, history, learner)
        if comm.rank == 0:
            for text in found:
                log.warning("%s: %s", type(self).__name__, text)
        self.warnings_ = found
        if writer is not None:
            writer.finish(final, {**attrs, "warnings": json.dumps(found)})
        return self

    def _degenerate(
        self,
        Y: np.ndarray,
        comm: Communicator,
        n_total: int,
        history: dict[str, Any],
        learner: Any = None,
    ) -> list[str]:
        """What looks degenerate in the finished fit (one sentence each; collective).

        σ at its floor (the model reproduces the data exactly), ET data selection keeping only
        a handful of points, dictionary elements that no data point uses.
        """
        found = []
        source = as_source(Y)
        sumsq = sum(
            float(np.einsum("nd,nd->", b, b, dtype=np.float64))
            for _, b in source.batches(self._read_rows)
        )
        sums = comm.allreduce_arrays({"sumsq": np.array(sumsq)})
        rms = float(np.sqrt(sums["sumsq"] / (n_total * source.n_features)))
        sigma = getattr(self, "sigma_", None)
        if isinstance(sigma, float) and rms > 0 and sigma < SIGMA_FLOOR * rms:
            found.append(
                f"sigma collapsed to {sigma:.3g} (data RMS {rms:.3g}): the model reproduces "
                "every data point exactly, so the free energy is meaningless. Use fewer "
                f"latents H or more data points (N={n_total})."
            )
        n_cut = history.get("n_cut", [])
        few = max(NCUT_FRACTION * n_total, int(getattr(self, "H", 0) or 0))
        if len(n_cut) and n_cut[-1] < min(n_total, few):
            found.append(
                f"ET data selection kept only {int(n_cut[-1])} of {n_total} data points in the "
                "last iteration, so the M-step learned from a handful of points (the "
                "truncated posterior misses most of the probability mass); use a larger "
                "Hprime/gamma, lower ncut_factor, or check that the model suits the data."
            )
        W = getattr(self, "W_", None)
        if isinstance(W, np.ndarray) and W.ndim == 2 and W.shape[1] > 1:
            local = np.zeros(W.shape[1])
            codes = self._training_codes(learner)
            # the E-step's batches (a GPU's are large), else the read blocks
            batch = int(getattr(learner, "batch_size", None) or self._read_rows)
            for rows, b in source.batches(batch):
                local += np.abs(np.asarray(codes(rows, b), dtype=np.float64)).sum(axis=0)
            usage = comm.allreduce_arrays({"u": local})["u"]
            unused = np.flatnonzero(usage <= UNUSED_FRACTION * max(float(usage.max()), 1e-300))
            if unused.size:
                found.append(
                    f"{unused.size} of {W.shape[1]} dictionary elements are unused (no data "
                    f"point's code uses columns {unused.tolist()[:20]} of W); fewer latents H "
                    "would give the same fit."
                )
        return found

    def _chosen_seed(self, Y: Any, comm: Communicator, D: int, seed: int) -> int:
        """The seed of the run to record (estimators with restarts choose among several)."""
        return seed

    def _training_codes(self, learner: Any):
        """``codes(rows, block)``: the latents of a block of this rank's training rows under
        the fitted model (for the checks at the end of a fit)."""
        return lambda rows, block: self.transform(block)

    def _finish(self, learner: Any, Y: Any, comm: Communicator) -> None:
        """The last change of the learned parameters after the EM iterations, before they
        are stored (collective; nothing by default)."""

    def _canonical(self, learner, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The learned parameters in the model's documented gauge (see
        :meth:`prosper.models.base.TruncatedModel.canonical_params`)."""
        return params

    def _init_kwargs(self) -> dict[str, Any]:
        return {}

    def _stop_callback(self):
        """The callback run_em calls after each iteration (models may add a stopping rule)."""
        return self.callback

    def _check_input(self, Y: Any) -> np.ndarray:
        """New data for transform/score: fitted first, then the training data's D."""
        self._fitted_params()
        return check_data(Y, dtype=_dtype_name(self.dtype), n_features=self.n_features_in_)

    def _collective_mean(self, Y: Any, total_of) -> float:
        """Mean over the rows of all ranks of a per-row quantity (``total_of(Y)`` sums it
        over this rank's checked rows). Every rank checks its input before the reduction, so
        a bad input on one rank raises everywhere instead of leaving the others waiting."""
        comm = self._comm()
        checked, failure = None, None
        try:
            checked = self._check_input(Y)
        except ValueError as exc:  # NotFittedError included
            failure = exc
        try:
            comm.agree(None if failure is None else str(failure))
        except ValueError:
            if failure is not None:
                raise failure from None  # this rank's own error, with its type
            raise
        total = comm.allreduce_arrays(
            {"F": np.array(float(total_of(checked))), "n": np.array(float(checked.shape[0]))}
        )
        return float(total["F"] / total["n"])

    def _n_features_in(self, params: dict[str, np.ndarray]) -> int:
        """D of the training data, read from the learned parameters (W is (D, H))."""
        return int(np.asarray(params[self._fitted_names[0]]).shape[0])

    def _resume(
        self, out, learner, writer: ResultWriter, comm: Communicator, Y: np.ndarray
    ) -> tuple[int, int]:
        """Continue from the checkpoint in ``out``; the file is changed only once every check
        has passed, so a refused resume leaves a finished run intact."""
        n_total = comm.allreduce(int(Y.shape[0]))
        checksum = _data_checksum(Y, comm, self._read_rows)
        ckpt, error = None, None
        if comm.rank == 0:
            try:
                ckpt = read_checkpoint(out)
                error = self._resume_mismatch(ckpt.attrs) or _data_mismatch(
                    out, ckpt.attrs, n_total, Y.shape[1], checksum
                )
            except (ConfigError, KeyError) as exc:
                error = str(exc)
        comm.agree(error)
        ckpt = comm.bcast(ckpt)
        writer.rewind(ckpt.iteration)
        stored_n = json.loads(str(ckpt.attrs.get("estimator_params", "{}"))).get("n_iter")
        if isinstance(stored_n, int) and self.n_iter > stored_n:
            log.info(
                "extending %s from n_iter=%d to %d (schedules given as fractions now span the "
                "new length)",
                out,
                stored_n,
                self.n_iter,
            )
            writer.extend(stored_n, self.n_iter, ckpt.iteration)
        elif ckpt.iteration >= self.n_iter:
            log.info(
                "%s already holds all %d iterations: nothing to do (pass a larger n_iter, "
                "e.g. --set model.n_iter=%d, to extend the run)",
                out,
                ckpt.iteration,
                2 * ckpt.iteration,
            )
        learner.set_params(ckpt.params, n_total)
        if hasattr(learner, "set_state"):  # state beyond the parameters (online statistics)
            learner.set_state(ckpt.state)
        # the annealing noise of iteration it is drawn from (seed, it): the stored seed, not
        # the one this call drew, reproduces the uninterrupted run
        learner.seed = ckpt.seed
        log.info("resuming %s at iteration %d", out, ckpt.iteration)
        return ckpt.iteration, ckpt.seed

    def _hyper_params(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.get_params().items()
            if k not in ("comm", "callback") and not isinstance(v, np.random.Generator)
        }

    def _resume_mismatch(self, attrs: dict[str, Any]) -> str | None:
        from prosper.io.results import decode_params

        model = getattr(self, "_model_name", type(self).__name__.lower())
        if str(attrs.get("model")) != model:
            return f"cannot resume: the file holds a {attrs.get('model')!r} run, not {model!r}."
        stored_text = json.loads(str(attrs.get("estimator_params", "{}")))
        mine_text = json.loads(encode_params(self._hyper_params()))
        stored = decode_params(str(attrs.get("estimator_params", "{}")))
        mine = decode_params(encode_params(self._hyper_params()))
        # compared as JSON text: an iteration position 1 and a fraction 1.0 are different
        differ = sorted(
            k
            for k in set(stored_text) | set(mine_text)
            if k not in (*RUNTIME_PARAMS, "n_iter")
            and json.dumps(stored_text.get(k), sort_keys=True)
            != json.dumps(mine_text.get(k), sort_keys=True)
        )
        stored_n = stored_text.get("n_iter")
        if not differ and isinstance(stored_n, int) and self.n_iter < stored_n:
            return (
                f"cannot resume: n_iter={self.n_iter} is smaller than the stored run's "
                f"n_iter={stored_n}; a run can be extended (a larger n_iter), not shortened."
            )
        if differ:
            return (
                "cannot resume: the configuration differs from the stored run in "
                + ", ".join(f"{k} (stored {stored.get(k)!r}, now {mine.get(k)!r})" for k in differ)
                + "."
            )
        return None

    def _file_attrs(
        self, config_text: str | None, comm: Communicator, Y: np.ndarray
    ) -> dict[str, Any]:
        model = getattr(self, "_model_name", type(self).__name__.lower())
        params = self._hyper_params()
        if config_text is None:
            config_text = dump_toml(
                {
                    "model": {
                        "name": model,
                        **{
                            k: (_dtype_name(v) if k == "dtype" else v)
                            for k, v in params.items()
                            if not isinstance(v, np.ndarray)
                        },
                    }
                }
            )
        return {
            "model": model,
            "estimator": type(self).__name__,
            "config": config_text,
            "estimator_params": encode_params(params),
            "n_samples": comm.allreduce(int(Y.shape[0])),
            "n_features": Y.shape[1],
            "data_checksum": _data_checksum(Y, comm, self._read_rows),
        }

    def _set_fitted(
        self, params: dict[str, np.ndarray], history: dict[str, Any], attrs: dict[str, Any]
    ) -> None:
        for name in self._fitted_names:
            value = np.asarray(params[name])
            setattr(self, name + "_", float(value) if value.ndim == 0 else value.copy())
        self.history_ = {k: np.asarray(v) for k, v in history.items()}
        self.free_energy_ = self.history_.get("free_energy", np.zeros(0))
        self.n_iter_ = int(attrs.get("n_iter", len(self.free_energy_)))
        self.n_features_in_ = self._n_features_in(params)
        self.seed_ = int(attrs.get("seed", 0))
        self.warnings_ = list(json.loads(str(attrs.get("warnings", "[]"))))

    def _fitted_params(self) -> dict[str, np.ndarray]:
        check_is_fitted(self, tuple(n + "_" for n in self._fitted_names))
        return {n: np.asarray(getattr(self, n + "_"), dtype=np.float64) for n in self._fitted_names}


def _data_checksum(Y: Any, comm: Communicator, batch_size: int) -> np.ndarray:
    """Sum and sum of squares of the data over all ranks: a resumed run must see the same
    data (equal up to the round-off of a different rank count). Read block by block."""
    source = as_source(Y)
    local = source.local_sums  # kept by the finiteness check of check_source, same pass
    if local is None:
        total, total_sq = 0.0, 0.0
        for _, block in source.batches(batch_size):
            total += float(block.sum(dtype=np.float64))
            total_sq += float(np.einsum("nd,nd->", block, block, dtype=np.float64))
        local = np.array([total, total_sq])
    sums = comm.allreduce_arrays({"sum": local[0], "sumsq": local[1]})
    return np.array([float(sums["sum"]), float(sums["sumsq"])])


def _data_mismatch(
    out, attrs: dict[str, Any], n_total: int, n_features: int, checksum: np.ndarray
) -> str | None:
    """Why this run's data cannot continue the stored run, or None."""
    stored_n = int(attrs.get("n_samples", n_total))
    stored_d = int(attrs.get("n_features", n_features))
    if stored_n != n_total:
        return (
            f"cannot resume {str(out)!r}: it was fitted on {stored_n} data points, this run "
            f"has {n_total}."
        )
    if stored_d != n_features:
        return (
            f"cannot resume {str(out)!r}: it was fitted on data with D={stored_d} features, "
            f"this run's data has D={n_features}."
        )
    stored = attrs.get("data_checksum")
    if stored is not None and not np.allclose(stored, checksum, rtol=1e-9, atol=0):
        return (
            f"cannot resume {str(out)!r}: this run's data differ from the stored run's "
            "(same shape, other values)."
        )
    return None


def _error_of(check, *args) -> str | None:
    try:
        check(*args)
    except ValueError as exc:
        return str(exc)
    return None


class TruncatedEMEstimator(EMEstimator):
    """Common surface of the discrete-latent estimators (BSC, TSC, DSC, MCA, MMCA, GSC).

    Subclasses set ``_model_class`` (a :class:`prosper.models.base.TruncatedModel`) and
    may override :meth:`_model_kwargs` and the defaults of :meth:`_default_schedules`.
    """

    _parameter_constraints = {
        "H": [Interval("int", 1, None)],
        "Hprime": [None, Interval("int", 1, None)],
        "gamma": [None, Interval("int", 1, None)],
        "states": [Options(("et", "evo", "full"))],
        "n_init": [Interval("int", 1, None)],
        "reassignment_ratio": [None, Interval("real", 0.0, 1.0)],
        "n_states": [None, Interval("int", 1, None)],
        "n_parents": [None, Interval("int", 1, None)],
        "n_children": [None, Interval("int", 1, None)],
        "n_generations": [None, Interval("int", 1, None)],
        "init": [Options(("data", "random"))],
        "temperature": [_schedule_like],
        "anneal_prior": [None, bool],
        "noise": [_schedule_like],
        "ncut_factor": [_schedule_like],
        "batch_size": [None, Interval("int", 1, None)],
    }
    _model_class: type = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the shared __init__ under the subclass's name, so that a misspelt argument reads
        # "BSC.__init__() got an unexpected keyword argument ..."
        if "__init__" not in cls.__dict__:
            shared = TruncatedEMEstimator.__init__
            init = types.FunctionType(
                shared.__code__,
                shared.__globals__,
                "__init__",
                shared.__defaults__,
                shared.__closure__,
            )
            init.__kwdefaults__ = shared.__kwdefaults__
            init.__doc__ = shared.__doc__
            init.__qualname__ = f"{cls.__qualname__}.__init__"
            init.__annotations__ = shared.__annotations__
            cls.__init__ = init

    #: default ET data selection: N_cut factor raised from 0 to 1 over the first 2/3 of the
    #: run, as in the original ET examples (measured in benchmarks/bench_defaults.py)
    _default_ncut = [[0.0, 0.0], [0.667, 1.0]]
    #: default temperature schedule (None: T = 1) and whether it tempers the prior (None:
    #: the model's choice); models set the ones their benchmark measured best
    _default_temperature = None
    _default_anneal_prior = None

    def __init__(
        self,
        H: int = 10,
        *,
        states: str = "et",
        Hprime: int | None = None,
        gamma: int | None = None,
        n_states: int | None = None,
        n_parents: int | None = None,
        n_children: int | None = None,
        n_generations: int | None = None,
        n_init: int = 1,
        reassignment_ratio: float | None = None,
        n_iter: int = 100,
        batch_size: int | None = None,
        temperature: Any = None,
        anneal_prior: bool | None = None,
        noise: Any = None,
        ncut_factor: Any = None,
        init: str = "data",
        backend: str = "auto",
        dtype: Any = "float64",
        random_state: int | np.random.Generator | None = None,
        comm: Any = None,
        callback: Any = None,
        progress: bool | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        self.H = H
        self.states = states
        self.Hprime = Hprime
        self.gamma = gamma
        self.n_states = n_states
        self.n_parents = n_parents
        self.n_children = n_children
        self.n_generations = n_generations
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.temperature = temperature
        self.anneal_prior = anneal_prior
        self.noise = noise
        self.ncut_factor = ncut_factor
        self.init = init
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    #: defaults of the evolutionary search (measured in benchmarks/bench_states.py)
    _default_search = {"n_states": 32, "n_parents": 4, "n_children": 4, "n_generations": 2}
    #: default ET sizes: Hprime = min(H, first), gamma = min(Hprime, second)
    _default_sizes = (8, 4)
    #: default reassignment_ratio (0: off); on where recovery over 20 seeds measured a gain
    #: (BSC), off where it was not measured or measured none (TSC)
    _default_reassignment = 0.0

    def _resolved(self) -> tuple[int, int]:
        """(H', γ) of the ET state set; (H, H) for full enumeration and explicit states."""
        if self.states != "et":
            return self.H, self.H
        Hprime = min(self.H, self._default_sizes[0]) if self.Hprime is None else self.Hprime
        gamma = min(Hprime, self._default_sizes[1]) if self.gamma is None else self.gamma
        return Hprime, gamma

    def _search(self) -> SearchSettings:
        """The evolutionary search's settings, defaults filled in."""
        given = {name: getattr(self, name) for name in self._default_search}
        return SearchSettings(
            **{k: self._default_search[k] if v is None else int(v) for k, v in given.items()}
        )

    def _check_params(self, D: int) -> None:
        # settings of the other state sets are ignored (as scikit-learn ignores the
        # parameters of an unused option), with a warning, so that a job file switches with
        # one key: --set model.states=evo
        ignored = []
        if self.states != "et":
            ignored += [n for n in ("Hprime", "gamma") if getattr(self, n) is not None]
        if self.states == "evo" and self.ncut_factor is not None:
            ignored.append("ncut_factor")
        if self.states != "evo":
            ignored += [n for n in self._default_search if getattr(self, n) is not None]
        if ignored:
            log.warning(
                "%s: %s do(es) not apply to states=%r and is ignored.",
                type(self).__name__,
                ", ".join(ignored),
                self.states,
            )
        if self.states == "evo":
            if not self._model_class.supports_explicit_states():
                raise ValueError(
                    f"states='evo' is not available for {type(self).__name__} yet; use "
                    "states='et' or 'full'."
                )
        Hprime, gamma = self._resolved()
        if Hprime > self.H:
            raise ValueError(f"Hprime must be <= H (={self.H}); got Hprime={Hprime}.")
        if gamma > Hprime:
            raise ValueError(f"gamma must be <= Hprime (={Hprime}); got gamma={gamma}.")
        self._schedules()

    def _schedules(self) -> Annealing:
        temperature = Schedule.parse(
            self._default_temperature if self.temperature is None else self.temperature,
            "temperature",
            1.0,
        )
        temperature.check("temperature", self.n_iter, 1.0)
        noise = Schedule.parse(self.noise, "noise", 0.0)
        noise.check("noise", self.n_iter, 0.0)
        ncut = Schedule.parse(
            self._default_ncut if self.ncut_factor is None else self.ncut_factor, "ncut_factor", 0.0
        )
        ncut.check("ncut_factor", self.n_iter, 0.0, 1.0)
        default_prior = (
            self._model_class.anneal_prior_default
            if self._default_anneal_prior is None
            else self._default_anneal_prior
        )
        anneal_prior = default_prior if self.anneal_prior is None else self.anneal_prior
        return Annealing(temperature, anneal_prior, noise, ncut)

    def _model_kwargs(self) -> dict[str, Any]:
        return {}

    _memory_advice = (
        "Lower batch_size, Hprime or gamma (the states per data point grow as "
        "C(Hprime, gamma)), or H, or raise max_memory."
    )

    def _bytes_per_state(self, H: int, gamma: int) -> int:
        """Working bytes per candidate state and data point in a batch (log-joints, weights
        and, on the generic path, the dense state)."""
        return _F8 * (H + 6)

    def _memory_needs(self, D: int, n_local: int, n_gathered: int = 0) -> dict[str, int]:
        H = int(self.H)
        B = max(1, min(self._read_rows, n_local))
        # batch_size=None on a GPU: the device holds the batch's state arrays, the host its
        # (B, D) block and the page-locked copy sent to the device, at the largest size
        gpu = {}
        if self.batch_size is None and self.backend in ("auto", "cupy"):
            from prosper.backends import available_backends
            from prosper.backends.cupy_backend import MAX_BATCH_POINTS

            if "cupy" in available_backends():
                gpu = {"GPU batch (host side)": 2 * min(MAX_BATCH_POINTS, n_local) * D * _F8}
        if self.states == "evo":
            search = self._search()
            K = search.n_states + search.n_parents * search.n_children
            width = (H + 7) // 8 if self._n_values() == 2 else H
            return {
                "parameters": _F8 * (10 * D * H + 4 * H * H),
                # a bit (binary latents) or a byte per latent, state and local row, plus on
                # rank 0 of several ranks the checkpoint's copy of every row's
                "evolutionary states": (n_local + n_gathered) * search.n_states * width,
                # the search's dense index states, hashes and log-joints of a batch, and the
                # fused kernel's Σ y<s>ᵀ per thread (large H), at most one per CPU
                "E-step batch": B * K * (H * 17 + 8 * 8)
                + _F8 * 4 * B * (D + H)
                + _F8 * H * D * (os.cpu_count() or 1),
                "per data point": _F8 * 2 * n_local,
            }
        Hprime, gamma = self._resolved()
        V = self._n_values()
        K = count_states(H, Hprime, gamma, V)
        table_rows = K - 1 - (V - 1) * H
        return {
            # W, its statistics, the two checkpoint slots, the trace row and M-step copies
            "parameters": _F8 * (10 * D * H + 4 * H * H),
            "state table": _F8 * table_rows * (Hprime + Hprime * Hprime + V),
            "E-step batch": B * self._et_bytes_per_point(D),
            "per data point": _F8 * 2 * n_local,
            **gpu,
        }

    def _n_values(self) -> int:
        """Number of values a latent takes (0 included)."""
        return len(self._model_class(1, 1, **self._model_kwargs()).values)

    def _et_bytes_per_point(self, D: int) -> int:
        """Working memory of the ET E-step per data point of a batch."""
        H = int(self.H)
        Hprime, gamma = self._resolved()
        K = count_states(H, Hprime, gamma, self._n_values())
        return K * self._bytes_per_state(H, gamma) + _F8 * 4 * (D + H)

    def _batch_size(self, model, backend: types.ModuleType, D: int) -> int:
        """Points per E-step batch: ``batch_size``, or for None the backend's choice where
        the E-step runs on its kernels (large batches on a GPU), else the CPU's 1000."""
        if self.batch_size is not None:
            return int(self.batch_size)
        if self.states == "evo" or not (model.fused_estep and model.runs_on(backend)):
            # the search, and the E-steps without the backend's fused kernel (the generic
            # path, GSC, MCA), run on the host whatever the backend
            return BATCH_POINTS
        return int(backend.batch_points(self._et_bytes_per_point(D)))

    def _make_model(self, D: int):
        return self._model_class(self.H, D, **self._model_kwargs())

    def _states(self, model, seed: int) -> ExpectationTruncation | EvolutionaryStates:
        if self.states == "evo":
            return EvolutionaryStates(self.H, model.values, self._search(), seed)
        Hprime, gamma = self._resolved()
        return ExpectationTruncation(self.H, Hprime, gamma, model.values)

    def _auto_candidates(self, model) -> Callable[[types.ModuleType], bool]:
        """The backends ``backend="auto"`` may choose for this fit.

        Those with a kernel for the model; with evolutionary states also a compiled search:
        a backend whose ``KERNELS`` list the NumPy reference's (CuPy) would run the search
        on the host, slower than numba's compiled one.
        """
        if self.states != "evo":
            return model.runs_on
        return lambda module: (
            model.runs_on(module)
            and (backend_kernel(module, "evo_select") is not EVO_REFERENCE["evo_select"])
        )

    def _make_learner(self, D: int, seed: int, backend) -> TruncatedEM:
        model = self._make_model(D)
        candidates = self._auto_candidates(model)
        if self.backend == "auto" and not candidates(backend):
            # the best backend that runs this fit compiled, not the best backend
            backend = get_backend("auto", supports=candidates)
        return TruncatedEM(
            model,
            self._states(model, seed),
            self._schedules(),
            n_iter=self.n_iter,
            batch_size=self._batch_size(model, backend, D),
            backend=backend,
            seed=seed,
            reassignment_ratio=(
                self._default_reassignment
                if self.reassignment_ratio is None
                else self.reassignment_ratio
            ),
        )

    def _init_kwargs(self) -> dict[str, Any]:
        return {"init": self.init}

    def _chosen_seed(self, Y: Any, comm: Communicator, D: int, seed: int) -> int:
        """With ``n_init > 1``: fit from ``n_init`` initialisations (without a result file)
        and return the seed of the one with the best final free energy; the caller then runs
        that one again, recording it, so the file and the fitted model are those of a single
        run with that seed (which a resume continues).

        Restart 0 uses ``seed`` itself; restart i the seed drawn from (seed, i), so the choice
        does not depend on the number of ranks.
        """
        if self.n_init == 1:
            return seed
        seeds = [seed] + [
            int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0] >> 2)
            for i in range(1, self.n_init)
        ]
        scores = []
        for i, s in enumerate(seeds):
            learner = self._make_learner(D, s, get_backend(self.backend))
            learner.initialize(Y, comm, np.random.default_rng(s), **self._init_kwargs())
            with rank_threads(comm, learner.backend.NAME):
                history = run_em(
                    learner,
                    Y,
                    comm,
                    n_iter=self.n_iter,
                    callback=self._stop_callback(),
                    progress=False,
                )
            scores.append(float(history["free_energy"][-1]))
            log.info(
                "%s: initialisation %d of %d (seed %d): free energy %.6g per point",
                type(self).__name__,
                i + 1,
                self.n_init,
                s,
                scores[-1],
            )
        best = int(np.argmax(scores))
        log.info(
            "%s: keeping initialisation %d; fitting it again to record it",
            type(self).__name__,
            best + 1,
        )
        return seeds[best]

    def _training_codes(self, learner: Any):
        if learner is not None and learner.evolutionary:
            # the states the fit kept for these rows, re-scored at the final parameters (a
            # fresh search, as transform makes, would cost many E-steps)
            return learner.kept_posterior_mean
        return super()._training_codes(learner)

    def _canonical(self, learner, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return learner.model.canonical_params(params)

    @property
    def _fitted_names(self) -> tuple[str, ...]:
        return self._model_class.param_names

    def _learner_for(self, Y: np.ndarray) -> TruncatedEM:
        params = self._fitted_params()
        learner = self._make_learner(
            Y.shape[1], getattr(self, "seed_", 0), get_backend(self.backend)
        )
        learner.set_params(params, Y.shape[0])
        return learner

    def transform(self, Y: Any) -> np.ndarray:
        """Posterior mean <s> of the latents under the truncated posterior.

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
        """
        Y = self._check_input(Y)
        return self._learner_for(Y).posterior_mean(Y).astype(Y.dtype, copy=False)

    def score(self, Y: Any, y: Any = None) -> float:
        """Mean free energy per data point (the truncated log-likelihood bound).

        Under MPI this is collective: every rank passes its rows and gets the global mean.
        """
        return self._collective_mean(Y, lambda Y: self._learner_for(Y).log_marginals(Y).sum())

    def sample(self, n_samples: int = 1, random_state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw data from the fitted model.

        Returns
        -------
        Y : ndarray of shape (n_samples, D)
        S : ndarray of shape (n_samples, H)
        """
        params = self._fitted_params()
        if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive int; got {n_samples!r}.")
        model = self._make_model(self.n_features_in_)
        return model.sample(int(n_samples), params, check_random_state(random_state))
