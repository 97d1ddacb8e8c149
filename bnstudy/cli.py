"""Command line: `bnstudy run|plot|report|reprobe|bench|data|list ...` (also `python -m bnstudy`).

A user's mistake ends with one line `bnstudy: error: ...` and exit code 2, never a traceback.
"""
from __future__ import annotations

import codecs
import os
import sys

INTERRUPTED = "bnstudy: interrupted; rerun the same command to resume from the last checkpoint"

try:  # Ctrl-C while importing is one line and exit 130 too: the console script imports this module first
    import argparse
    import math
    import time

    from bnstudy.config import PRESETS, ConfigError, experiment_path, list_experiments
    from bnstudy.errors import USER_ERRORS
    from bnstudy.schema import MAX_STEPS, declared
except KeyboardInterrupt:
    print(INTERRUPTED, file=sys.stderr)
    raise SystemExit(130) from None

EPILOG = """examples:
  bnstudy run noisy-bn                          quick preset, seed 0, every arm
  bnstudy run noisy-bn --seeds 0 1 2 --preset paper --device cuda
  bnstudy run noisy-bn --arms batchnorm --set train.lr=0.5 --results-dir results/lr05
  bnstudy plot noisy-bn
"""


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results", metavar="PATH",
                   help="where run folders and figures go (default: results)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnstudy", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train an experiment's arms x seeds, then nothing else (see plot)",
                         description="Train every arm of EXPERIMENT for each seed. Finished runs are skipped, "
                                     "interrupted ones resume from their last checkpoint.")
    run.add_argument("experiment",
                     help=f"experiment name or path to a .toml file; known: {', '.join(list_experiments())}")
    run.add_argument("--preset", default="quick", choices=PRESETS,
                     help="smoke: seconds, for tests; quick: minutes on a laptop CPU; long: the paper's 15,000-step "
                          "schedule at quick's width (hours a run on a CPU: docs/long.md); paper: the paper's protocol")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one seed (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="N", help="several seeds")
    run.add_argument("--arms", nargs="+", metavar="ARM", help="only these arms (default: the preset's arms)")
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    run.add_argument("--data-dir", metavar="PATH",
                     help="folder holding cifar-10-batches-py/ (default: $BNSTUDY_DATA, else data/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one config value, e.g. --set train.lr=0.5 (repeatable; value read as TOML)")
    run.add_argument("--launcher", default="local", choices=["local", "ray", "processes"],
                     help="local: one run after another here (default); ray: one Ray task per run, on RAY_ADDRESS "
                          "if set, else a local Ray (needs pip install -e '.[ray]'); processes: --jobs runs at a "
                          "time, each in its own process, side by side on one GPU or on the CPU's cores")
    run.add_argument("--jobs", type=int, default=2, metavar="N",
                     help="runs at a time with --launcher processes (default 2)")
    run.add_argument("--stop-after", type=float, metavar="MINUTES",
                     help="wall-clock budget: runs still training then checkpoint and stop, runs not started stay "
                          "so; the same command resumes them (e.g. the end of a GPU lease)")
    run.add_argument("--until-step", type=int, metavar="STEP",
                     help="a planned stop: each run trains its schedule's first STEP steps, checkpoints and ends "
                          "'stopped' (read as whole up to there); the command without it resumes it to the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_common(run)

    plot = sub.add_parser("plot", help="draw an experiment's figures from its CSVs (no training)",
                          description="Read every run folder of EXPERIMENT under --results-dir and write "
                                      "<results>/<experiment>/figures/*.png, aggregated over all seeds present.")
    plot.add_argument("experiment")
    plot.add_argument("--unfinished", action="store_true",
                      help="also draw runs still training or killed part way (left out by default, and said)")
    _add_common(plot)

    data = sub.add_parser("data", help="check or download CIFAR-10 or MNIST")
    data.add_argument("action", choices=["check", "download"],
                      help="check: verify checksums and say which copy was found; download: fetch the official files")
    data.add_argument("--dataset", choices=["cifar10", "mnist"], default="cifar10",
                      help="cifar10 (default): cifar-10-batches-py/; mnist: mnist/, the four official IDX files")
    data.add_argument("--data-dir", metavar="PATH", help="default: $BNSTUDY_DATA, else data/")

    report = sub.add_parser("report", help="write results/REPORT.md: figures and each paper claim with its verdict",
                            description="Read every experiment's results (no training), write "
                                        "<results>/<experiment>/summary.csv and <results>/REPORT.md.")
    report.add_argument("--readme", metavar="PATH", help="also put the claims table and key figures into this "
                                                        "README, between its <!-- claims:start/end --> markers")
    report.add_argument("--no-figures", action="store_true", help="keep the figures on disk as they are "
                                                                 "(default: redraw each experiment's figures)")
    _add_common(report)

    bench = sub.add_parser("bench", help="measure costs as ratios taken side by side; writes <results>/bench/bench.csv",
                           description="Training-loop overhead, probe costs against their minimum passes, and "
                                       "a per-image DataLoader reproduction, each as a ratio of two timings in one "
                                       "run.")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--data-dir", metavar="PATH", help="CIFAR-10 folder (default $BNSTUDY_DATA, else data/); "
                                                          "without it the synthetic set is used")
    bench.add_argument("--width", type=float, help="VGG-16 width (default: 0.25 on CPU, 1 on CUDA)")
    bench.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    bench.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per measurement")
    bench.add_argument("--levers-only", action="store_true",
                       help="only the device's rows: on CUDA the step time, the TF32-peak fraction and what each "
                            "backend option costs; on the CPU channels_last and torch.compile")
    bench.add_argument("--no-compile", action="store_true", help="leave out torch.compile's rows (compiling alone "
                                                                 "can take a minute)")
    bench.add_argument("--end-to-end", action="store_true",
                       help="also time the whole quick noisy-bn experiment in a temporary folder (about 10 minutes)")
    _add_common(bench)

    reprobe = sub.add_parser("reprobe", help="the landscape along the gradient again, at finished runs' checkpoints, "
                                             "on a wider grid of step sizes",
                             description="Probe the last two checkpoints of each finished run of EXPERIMENT along "
                                         "the gradient (or the filter-normalized gradient) on a log grid of step "
                                         "sizes, on a few training batches; write "
                                         "<results>/<experiment>/reprobe/landscape.csv.xz and "
                                         "figures/reprobe-<probe>.png. Trains nothing; run folders are not touched.")
    reprobe.add_argument("experiment", help="a results folder's experiment name")
    reprobe.add_argument("--arms", nargs="+", metavar="ARM", help="only these arms (default: every arm)")
    reprobe.add_argument("--seeds", type=int, nargs="+", metavar="N", help="only these seeds (default: every seed)")
    reprobe.add_argument("--direction", default="gradient", choices=["gradient", "filter-gradient"],
                         help="gradient (the paper's, default) or filter-gradient: each filter's step a fraction of "
                              "its own norm, blind to BN's free scale")
    reprobe.add_argument("--eta-min", type=float, help="smallest step: along the gradient in multiples of the run's "
                                                       "LR (default 1e-4), along filter-gradient a fraction of each "
                                                       "filter's norm (default 1e-6)")
    reprobe.add_argument("--eta-max", type=float, help="largest step (defaults: 4, the top of the paper's grid; "
                                                       "0.04, the top of the runs' filter grid)")
    reprobe.add_argument("--points", type=int, default=16, help="step sizes, log-spaced (default 16)")
    reprobe.add_argument("--batches", type=int, default=3, help="training batches probed per checkpoint (default 3)")
    reprobe.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    reprobe.add_argument("--data-dir", metavar="PATH", help="default: $BNSTUDY_DATA, else data/")
    reprobe.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(reprobe)

    sub.add_parser("list", help="list the experiments and their arms")
    return parser


def cmd_run(args) -> int:
    from bnstudy.runner import run_experiment

    seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else 0]
    if not 1 <= args.jobs <= 256:
        raise UsageError(f"--jobs must be between 1 and 256 (runs at a time), got {args.jobs}")
    deadline = None
    if args.stop_after is not None:
        _check_positive("--stop-after", args.stop_after, 60 * 24 * 365, "minutes of wall-clock time")
        deadline = time.time() + 60 * args.stop_after
    if args.until_step is not None and not 1 <= args.until_step <= MAX_STEPS:
        raise UsageError(f"--until-step must be a step between 1 and {MAX_STEPS:,}, got {args.until_step}")
    run_experiment(args.experiment, args.preset, seeds, args.arms, args.device, args.data_dir,
                   args.results_dir, args.overrides, progress=not args.no_progress, launcher=args.launcher,
                   deadline=deadline, jobs=args.jobs, until_step=args.until_step)
    return 0


def cmd_plot(args) -> int:
    from bnstudy.plots import plot_experiment

    for path in plot_experiment(args.experiment, args.results_dir, args.unfinished):
        print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from bnstudy.report import write_report

    print(f"wrote {write_report(args.results_dir, args.readme, figures=not args.no_figures)}")
    return 0


def cmd_bench(args) -> int:
    from pathlib import Path

    from bnstudy.bench import end_to_end, format_header, format_table, run_bench, write_rows
    from bnstudy.runner import resolve_data_dir, resolve_device

    device = resolve_device(args.device)
    width = args.width if args.width is not None else (1.0 if device.type == "cuda" else 0.25)
    max_width = declared()["model.width"][1]["at_most"]  # the bound a run's model.width has
    _check_positive("--width", width, max_width, "a multiplier on VGG-16's channel counts")
    _check_positive("--min-run-time", args.min_run_time, 3600, "seconds per measurement; an hour is plenty")
    from bnstudy.bench import SYNTHETIC
    if not 2 <= args.batch <= SYNTHETIC.train_size:  # checked before minutes of timing, and named as typed
        raise UsageError(f"--batch must be between 2 and {SYNTHETIC.train_size:,} (examples per step; the bench's "
                         f"smaller data set has {SYNTHETIC.train_size:,}), got {args.batch}")
    rows = run_bench(device, resolve_data_dir(args.data_dir), width, args.batch, args.min_run_time,
                     levers_only=args.levers_only, with_compile=not args.no_compile)
    if args.end_to_end:
        rows += end_to_end(resolve_data_dir(args.data_dir), args.device)
    path = Path(args.results_dir) / "bench" / "bench.csv"
    write_rows(rows, path, device, width, args.batch)
    print(format_header(rows, device, width, args.batch, resolve_data_dir(args.data_dir)))
    print(format_table(rows))
    print(f"wrote {path}")
    return 0


def _check_positive(option: str, value: float, most: float, unit: str) -> None:
    if not (math.isfinite(value) and 0 < value <= most):  # nan passes a plain `<= 0` test
        raise UsageError(f"{option} must be a finite number > 0 and at most {most:g} ({unit}), got {value:g}")


def cmd_data(args) -> int:
    from bnstudy.data import cifar_folder, download_cifar, verify_cifar
    from bnstudy.runner import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is a file; give the folder that holds (or is to hold) "
                         f"{'mnist' if args.dataset == 'mnist' else 'cifar-10-batches-py'}/")
    if args.dataset == "mnist":
        return _mnist_data(args.action, data_dir)
    if args.action == "download":
        folder = download_cifar(data_dir)
        print(f"downloaded CIFAR-10 to {folder}")
    folder = cifar_folder(data_dir)
    print(f"{folder}: CIFAR-10, {verify_cifar(folder)}, checksums verified")
    return 0


def _mnist_data(action: str, data_dir) -> int:
    from bnstudy.mnist import fetch_mnist, mnist_folder, verify_mnist

    folder = fetch_mnist(data_dir) if action == "download" else mnist_folder(data_dir)
    print(f"{folder}: MNIST, {verify_mnist(folder)} IDX files, checksums verified")
    return 0


def cmd_reprobe(args) -> int:
    from bnstudy.reprobe import Grid, reprobe
    from bnstudy.runner import resolve_device

    grid = Grid(args.direction, args.eta_min, args.eta_max, args.points, args.batches)
    for path in reprobe(args.experiment, args.results_dir, args.arms, args.seeds, grid, args.data_dir,
                        resolve_device(args.device), progress=not args.no_progress):
        print(f"wrote {path}")
    return 0


def cmd_list(args) -> int:
    from bnstudy.config import load_experiment

    broken = []
    for name in list_experiments():
        try:
            exp = load_experiment(name)
        except ConfigError as err:  # list the others, then name this one
            path = str(experiment_path(name))
            broken.append(str(err) if str(err).startswith(path) else f"{path}: {err}")
            continue
        print(f"{name:12s} {exp.title}\n{'':12s} arms: {', '.join(exp.arms)}")
    for line in broken:
        print(f"bnstudy: error: {line}", file=sys.stderr)
    return 2 if broken else 0


COMMANDS = {"run": cmd_run, "plot": cmd_plot, "report": cmd_report, "bench": cmd_bench, "data": cmd_data,
            "reprobe": cmd_reprobe, "list": cmd_list}


def _denied(path) -> str:
    """What a refused access was, as far as the file says: 'read' where it exists and may not be read, else 'write'."""
    return "read" if path and os.path.exists(path) and not os.access(path, os.R_OK) else "write"


def _escaped(error: UnicodeEncodeError):
    """Printing what the terminal's encoding cannot hold: a name read from bytes (a surrogate) as those bytes, any
    other character as its escape, so that an ASCII locale (LC_ALL=POSIX, PYTHONUTF8=0) prints every line."""
    try:
        return codecs.lookup_error("surrogateescape")(error)
    except UnicodeEncodeError:
        return codecs.lookup_error("backslashreplace")(error)


codecs.register_error("bnstudy-escaped", _escaped)


def _printable_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a real text stream (not a test's capture)
            stream.reconfigure(errors="bnstudy-escaped")


def main(argv: list[str] | None = None) -> int:
    _printable_streams()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, UsageError, FileExistsError) as err:
        print(f"bnstudy: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bnstudy list | head -1`: the reader took what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except PermissionError as err:
        print(f"bnstudy: error: cannot {_denied(err.filename)} {err.filename}: permission denied", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk (28), a read-only folder (30), ...: what and where, in one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"bnstudy: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
