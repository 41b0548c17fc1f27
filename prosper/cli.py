"""The ``prosper`` command: fit a model from a TOML job file, inspect and plot results.

Thin by design: it only wires config -> data -> estimator -> results file. Run it alone or
under MPI (``mpiexec -n 8 prosper fit job.toml --out run.h5``); each rank then reads only
its own rows of the data.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from prosper._version import __version__
from prosper.exceptions import ConfigError, MPIUnavailableError

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
    debug_help = "show the traceback of an error (also PROSPER_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
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
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; a larger n_iter (e.g. "
        "--set model.n_iter=400) extends a finished run",
    )
    fit.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    fit.add_argument(
        "--allow-symlink",
        action="store_true",
        help="accept an --out that is a symbolic link (its target is written); refused otherwise",
    )
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
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO (WARNING with --quiet)",
    )
    fit.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on rank 0 (default: a bar on a terminal, otherwise a log line "
        "with iteration, free energy and time left every 30 s)",
    )
    fit.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bar or progress lines, only warnings and errors",
    )

    info = sub.add_parser("info", help="summarise a result file")
    info.add_argument("file", help="HDF5 result file")

    plot = sub.add_parser("plot", help="plot the learned dictionary and the free energy")
    plot.add_argument("file", help="HDF5 result file")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")

    models = sub.add_parser("models", help="list the models and their parameters")
    for command in (fit, info, plot, models):
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return parser


#: optional modules and the extra that installs them
_EXTRAS = {
    "matplotlib": "plot",
    "sklearn": "data",
    "PIL": "data",
    "mpi4py": "mpi",
    "cupy": "gpu",
}


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("PROSPER_DEBUG", "") not in (
        "",
        "0",
    )


def _describe(exc: BaseException) -> tuple[int, str]:
    """Exit status and one-line message for an error that reached the top level.

    Status 2: the input or the environment is at fault (bad job, file or data, a missing
    optional package); status 1: an internal error (a bug: please report it).
    """
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root = exc.name.split(".")[0]
        if root in _EXTRAS:
            return 2, (
                f"this needs the optional package {root!r}, which is not installed: "
                f"pip install 'prosper[{_EXTRAS[root]}]'"
            )
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (ValueError, OSError, ImportError, MPIUnavailableError)):
        return 2, text
    if isinstance(exc, FloatingPointError):
        # not a bug: the data or the hyper-parameters drove the parameters to NaN
        return 2, (
            f"the fit diverged ({text}); check the data for extreme values or scale them, "
            'use dtype = "float64", or fewer latents H.'
        )
    if isinstance(exc, MemoryError):
        return 1, f"out of memory ({text}); lower batch_size or the problem size."
    return 1, (
        f"internal error: {type(exc).__name__}: {text} (run again with --debug for the "
        "traceback, and please report it)"
    )


def _quiet_stdout() -> None:
    """After a broken pipe (``prosper info r.h5 | head``): drop further output silently."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``prosper`` command; returns the exit status.

    Any error is reported in one line on stderr, with exit status 2 for bad input and 1 for
    internal errors; ``--debug`` (or ``PROSPER_DEBUG=1``) shows the traceback instead.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = _debug_requested(args)
    try:
        if args.command == "fit":
            return _fit_command(args, debug)
        if args.command == "info":
            _info(Path(args.file))
        elif args.command == "plot":
            from prosper.plot import plot_result

            print(f"wrote {plot_result(args.file, args.output)}")
        else:
            _models()
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except KeyboardInterrupt:
        print(f"prosper {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        status, text = _describe(exc)
        print(f"prosper {args.command}: error: {text}", file=sys.stderr)
        return status
    return 0


def _fit_command(args: argparse.Namespace, debug: bool) -> int:
    from prosper.parallel import AgreedError, get_comm, install_abort_hook, install_rank_logging

    comm = get_comm()
    if args.quiet:
        args.progress = False
    level = args.log_level or ("WARNING" if args.quiet else "INFO")
    install_rank_logging(comm, getattr(logging, level))
    install_abort_hook(comm)
    out = None
    try:
        # everything a rank reads before the fit is agreed on, so that a bad job or a bad
        # shard stops every rank cleanly, with one message
        config, out = comm.run_agreed(_prepare, args, comm)
        _fit(args, comm, config, out)
    except KeyboardInterrupt:
        if comm.rank == 0:
            print(_interrupted(args, out), file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        if debug:
            if comm.size == 1:
                raise
            sys.stderr.write(f"[rank {comm.rank}] " + traceback.format_exc())
        status, text = _describe(exc)
        if comm.size == 1:
            print(f"prosper fit: error: {text}", file=sys.stderr, flush=True)
            return status
        if isinstance(exc, AgreedError):
            # every rank raised it together: one message (it names the rank), a clean exit
            if comm.rank == 0:
                print(f"prosper fit: error: {text}", file=sys.stderr, flush=True)
            return status
        # this rank alone: the others may wait in a collective, so end the job
        print(f"[rank {comm.rank}] prosper fit: error: {text}", file=sys.stderr, flush=True)
        comm.abort(status)
    return 0


def _interrupted(args: argparse.Namespace, out: str | None) -> str:
    """The line printed after Ctrl-C: where the run stopped and how to continue it."""
    from prosper.io.results import read_checkpoint

    if out is None:
        return "prosper fit: interrupted before the run started."
    try:
        done = read_checkpoint(out).iteration
    except (ValueError, OSError, KeyError):
        return f"prosper fit: interrupted before {out} held a checkpoint; nothing to resume."
    return (
        f"prosper fit: interrupted; the run stopped at iteration {done} and {out} is valid: "
        f"continue it with 'prosper fit {args.job} --out {out} --resume'."
    )


def _prepare(args: argparse.Namespace, comm: Any) -> tuple[Any, str]:
    """Read the job and check the output file (every rank; errors are agreed on)."""
    from prosper.io.config import read_config
    from prosper.io.results import output_error

    config = read_config(args.job, args.overrides)
    out = args.out or config.output.get("file")
    if out is None:
        raise ConfigError("no output file: pass --out FILE or set [output] file in the job.")
    if "{rank}" in str(out):
        raise ConfigError("--out must not contain {rank}: rank 0 writes one file.")
    if comm.rank == 0:
        error = output_error(
            out, allow_symlink=args.allow_symlink, inputs=_input_paths(args, config, comm)
        )
        if error is not None:
            raise ConfigError(error)
    return config, str(out)


def _input_paths(args: argparse.Namespace, config: Any, comm: Any) -> list[Path]:
    """The job file and every data file of the job (all ranks' shards)."""
    paths = [Path(args.job)]
    if "file" in config.data:
        path = str(config.data_path())
        paths += [Path(path.replace("{rank}", str(r))) for r in range(comm.size)]
    return paths


def _fit(args: argparse.Namespace, comm: Any, config: Any, out: str) -> None:
    from prosper.estimators import get_estimator_class

    estimator = get_estimator_class(config.model)(**config.model_params)
    if hasattr(estimator, "progress") and args.progress is not None:
        estimator.progress = args.progress
    Y, ground_truth = comm.run_agreed(_load_data, config, comm)
    estimator._fit(
        Y,
        out=out,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_symlink=args.allow_symlink,
        input_paths=tuple(_input_paths(args, config, comm)),
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
    from prosper.io.results import checkpoint_group, open_result

    if not path.exists():
        raise FileNotFoundError(f"result file {str(path)!r} does not exist.")
    with open_result(path) as f:
        attrs = dict(f.attrs)
        done = int(checkpoint_group(f).attrs["iteration"]) if "checkpoint" in f else 0
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
