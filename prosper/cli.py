"""The ``prosper`` command: fit a model from a TOML job file, inspect and plot results.

Thin by design: it only wires config -> data -> estimator -> results file. Run it alone or
under MPI (``mpiexec -n 8 prosper fit job.toml --out run.h5``); each rank then reads only
its own rows of the data.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from prosper._version import __version__
from prosper.exceptions import ConfigError

log = logging.getLogger("prosper.cli")

__all__ = ["main"]

DESCRIPTION = """\
ProSper: probabilistic sparse coding (BSC, TSC, DSC, MCA, MMCA, GSC, SBL, KroneckerSBL,
l_q sparse coding) learned by one EM engine, on a laptop or on many MPI ranks.

Quick start:
  prosper fit examples/bsc_bars.toml --out bsc_bars.h5     fit a model described in TOML
  mpiexec -n 4 prosper fit examples/bsc_bars.toml --out r.h5   the same on 4 MPI ranks
  prosper fit job.toml --out r.h5 --resume                  continue an interrupted run
  prosper info r.h5                                          what a result file holds
  prosper plot r.h5 -o dict.png                              learned dictionary + free energy
  prosper models                                             the models and their parameters
"""

JOB_HELP = """\
A job file has three sections:
  [model]   name = "bsc" (see 'prosper models') and the estimator's parameters, e.g. H = 10
  [data]    generator = "bars" with its arguments, or file = "data.h5" (+ dataset = "Y");
            .npy and HDF5 files are streamed: each rank reads its own block of rows,
            batch_size rows at a time (.npz archives are loaded, one block per rank);
            "{rank}" in file names gives each rank its own file (pre-sharded data)
  [output]  file = "run.h5" (or --out)
Data and array files are found relative to the job file; the output file relative to the
current directory.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prosper",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prosper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser(
        "fit",
        help="fit a model described by a TOML job file",
        description="Fit a model described by a TOML job file.\n\n" + JOB_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("job", help="TOML job file")
    fit.add_argument("--out", "-o", help="HDF5 result file (default: [output] file)")
    fit.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    fit.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job-file value, e.g. --set model.H=12 (repeatable)",
    )
    fit.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )
    fit.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on rank 0 (default: only on a terminal)",
    )

    info = sub.add_parser("info", help="summarise a result file")
    info.add_argument("file", help="HDF5 result file")

    plot = sub.add_parser("plot", help="plot the learned dictionary and the free energy")
    plot.add_argument("file", help="HDF5 result file")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")

    sub.add_parser("models", help="list the models and their parameters")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prosper`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "fit":
        return _fit_command(args)
    try:
        if args.command == "info":
            _info(Path(args.file))
        elif args.command == "plot":
            from prosper.plot import plot_result

            print(f"wrote {plot_result(args.file, args.output)}")
        else:
            _models()
    except (ConfigError, ValueError, FileNotFoundError, OSError, ImportError) as exc:
        print(f"prosper {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _fit_command(args: argparse.Namespace) -> int:
    from prosper.parallel import get_comm, install_abort_hook, install_rank_logging

    comm = get_comm()
    install_rank_logging(comm, getattr(logging, args.log_level))
    install_abort_hook(comm)
    try:
        _fit(args, comm)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # user errors: a clear message, no traceback; every rank stops (no rank waits)
        prefix = f"[rank {comm.rank}] " if comm.size > 1 else ""
        print(f"{prefix}prosper fit: error: {exc}", file=sys.stderr, flush=True)
        if comm.size > 1:
            comm.abort(2)
        return 2
    return 0


def _fit(args: argparse.Namespace, comm: Any) -> None:
    from prosper.estimators import get_estimator_class
    from prosper.io.config import read_config

    config = read_config(args.job, args.overrides)
    out = args.out or config.output.get("file")
    if out is None:
        raise ConfigError("no output file: pass --out FILE or set [output] file in the job.")
    if "{rank}" in str(out):
        raise ConfigError("--out must not contain {rank}: rank 0 writes one file.")
    estimator = get_estimator_class(config.model)(**config.model_params)
    if hasattr(estimator, "progress") and args.progress is not None:
        estimator.progress = args.progress
    Y, ground_truth = _load_data(config, comm)
    estimator._fit(
        Y,
        out=out,
        resume=args.resume,
        overwrite=args.overwrite,
        config_text=config.text,
        ground_truth=ground_truth,
    )
    F = getattr(estimator, "free_energy_", np.zeros(0))
    log.info(
        "done: %d iterations, final free energy %s; results in %s",
        estimator.n_iter_,
        f"{F[-1]:.6g}" if len(F) else "n/a",
        out,
    )


def _load_data(config: Any, comm: Any) -> tuple[Any, dict | None]:
    """This rank's rows of the job's data, and the generating parameters if known.

    Data files are not read here: a .npy or HDF5 file gives a DataSource over this rank's
    block of rows, which the fit reads batch by batch (.npz archives are compressed and are
    loaded, the rank's block only).
    """
    from prosper.data import get_generator
    from prosper.io.sources import dataset_shape, open_source
    from prosper.parallel import row_block

    data = dict(config.data)
    if "generator" in data:
        name = data.pop("generator")
        generator = get_generator(name)
        if "random_state" in inspect.signature(generator).parameters and (
            data.get("random_state") is None
        ):
            # every rank generates the data itself, and --resume generates it again
            raise ConfigError(
                f"[data] generator = {name!r} needs random_state = <int>, so that every rank "
                "(and a resumed run) generates the same data."
            )
        generated = generator(**data)
        Y = np.asarray(generated.Y)
        rows = row_block(Y.shape[0], comm)
        truth = generated.ground_truth() if hasattr(generated, "ground_truth") else None
        return Y[rows], truth if comm.rank == 0 else None
    path = config.data_path()
    dataset = data.get("dataset")
    if "{rank}" not in str(path) and not path.exists() and Path(data["file"]).exists():
        raise ConfigError(
            f"data file {str(path)!r} does not exist: paths in a job file are relative to "
            f"the job file's folder ({str(config.base_dir)!r}); {data['file']!r} exists in the "
            "current directory, so give its path from the job file's folder or an absolute path."
        )
    if "{rank}" in str(path):
        # pre-sharded data: every rank reads its own whole file
        extra = Path(str(path).replace("{rank}", str(comm.size)))
        if comm.rank == 0 and extra.exists():
            raise ConfigError(
                f"{str(extra)!r} exists but this job has only {comm.size} rank(s), so it would "
                "not be read: start one rank per shard (mpiexec -n <number of shards>)."
            )
        path = Path(str(path).replace("{rank}", str(comm.rank)))
        return open_source(path, dataset), None
    shape = dataset_shape(path, dataset)
    if len(shape) != 2:
        raise ConfigError(f"data in {str(path)!r} must be 2-D (N, D); got shape {shape}.")
    return open_source(path, dataset, rows=row_block(shape[0], comm)), None


def _info(path: Path) -> None:
    from prosper.io.results import open_result

    if not path.exists():
        raise FileNotFoundError(f"result file {str(path)!r} does not exist.")
    with open_result(path) as f:
        attrs = dict(f.attrs)
        done = int(f["checkpoint"].attrs["iteration"]) if "checkpoint" in f else 0
        F = np.array(f["metrics/free_energy"]) if "metrics/free_energy" in f else np.zeros(0)
        params = {k: d.shape for k, d in f["params"].items()} if "params" in f else {}
        finished = "model" in f
        seconds = (
            float(np.sum(f["metrics/seconds_estep"]))
            if "metrics/seconds_estep" in f
            else float("nan")
        )
    print(f"file:          {path}")
    print(f"model:         {attrs.get('model')} ({attrs.get('estimator')})")
    print(f"prosper:       {attrs.get('prosper_version')}")
    print(
        f"started:       {attrs.get('start_time')} on {attrs.get('host')}, "
        f"{attrs.get('n_ranks')} rank(s)"
    )
    print(f"data:          N={attrs.get('n_samples')}, D={attrs.get('n_features')}")
    print(f"iterations:    {done} done ({'finished' if finished else 'not finished: --resume'})")
    if len(F):
        print(f"free energy:   {F[-1]:.6g} per data point (last), {F[0]:.6g} (first)")
    print(f"E-step time:   {seconds:.3g} s in total")
    for name, shape in params.items():
        print(f"param {name:8s} {shape[1:]} x {shape[0]} iterations")
    print("config:")
    for line in str(attrs.get("config", "")).strip().splitlines():
        print(f"  {line}")


def _models() -> None:
    import inspect

    from prosper.estimators import ESTIMATORS, get_estimator_class

    for name in ESTIMATORS:
        try:
            cls = get_estimator_class(name)
        except ValueError:
            continue
        doc = (inspect.getdoc(cls) or "").splitlines()[0]
        params = [p for p in cls._get_param_names() if p not in ("comm", "callback")]
        print(f"{name:14s} {cls.__name__}: {doc}")
        print(f"{'':14s} parameters: {', '.join(params)}")
