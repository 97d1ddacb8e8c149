"""Bad input: one clear line naming the problem, exit code 2, no traceback, results on disk untouched."""
import dataclasses
import functools
import hashlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnstudy.cli import main
from bnstudy.config import ConfigError, RunConfig, build, load_experiment, parse_override, run_config, validate
from bnstudy.data import CIFAR_CHECKSUMS, write_batch

SYNTHETIC = ["--set", "data.dataset=synthetic"]


def cifar_like(folder):
    """A tiny folder in CIFAR-10's format: its checksums match no known copy."""
    folder.mkdir(parents=True)
    for name in CIFAR_CHECKSUMS["official"]:
        write_batch(folder / name, np.zeros((4, 3, 32, 32), np.uint8), [0, 1, 2, 3])
    return folder.parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder holding a finished run, to prove bad input never touches it."""
    results = tmp_path_factory.mktemp("results")
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(results),
                 "--no-progress", *SYNTHETIC]) == 0
    return results


def snapshot(results):
    return {p: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(results.rglob("*")) if p.is_file()}


def toml(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return str(path)


def file_with(text):
    return lambda t: ["--experiment-file", toml(t, text)]


ARM_A = '[arms.a.model]\nnorm = "none"\n'

BAD = {  # name: (extra arguments, or a function of tmp_path returning them; words the message must contain)
    "malformed TOML": (lambda t: ["--experiment-file", toml(t, "name = [oops\n")], "malformed TOML"),
    "unknown key in a file": (file_with("[arms.a.train]\nlrr = 1\n"), "unknown key 'train.lrr'"),
    "wrong type": (["--set", "train.steps=\"ten\""], "train.steps must be an integer"),
    "LR zero": (["--set", "train.lr=0"], "train.lr must be > 0"),
    "LR negative": (["--set", "train.lr=-0.1"], "train.lr must be > 0"),
    "steps zero": (["--set", "train.steps=0"], "train.steps must be > 0"),
    "batch larger than the dataset": (["--set", "train.batch_size=100000"], "larger than the training set"),
    "unknown arm": (["--arms", "bachnorm"], "unknown arm 'bachnorm'"),
    "unknown norm": (["--set", "model.norm=bn"], "unknown model.norm 'bn'"),
    "unknown cfg": (["--set", "model.cfg=17"], "unknown model.cfg 17"),
    "unknown preset": (["--preset", "huge"], "invalid choice: 'huge'"),
    "layer out of range": (["--set", "activations.layers=[40]"], "layer #40 out of range"),
    "layer numbered 0": (["--set", "activations.layers=[0]"], "activations.layers[0] must be >= 1 (a weight-layer"),
    "--set on a missing key": (["--set", "train.momentum=0.9"], "--set train.momentum: no such key"),
    "--set without a value": (["--set", "train.lr"], "--set expects section.key=value"),
    "missing data folder": (["--data-dir", "/nonexistent/cifar"], "CIFAR-10 not found"),
    "wrong checksum": (lambda t: ["--data-dir", str(cifar_like(t / "d" / "cifar-10-batches-py"))],
                       "matches no known copy"),
    "unknown device": (["--device", "tpu"], "unknown device 'tpu'"),
    "cuda without a GPU": (["--device", "cuda"], "no CUDA GPU"),
    "cuda:0 without a GPU": (["--device", "cuda:0"], "--device cuda:0: no CUDA GPU"),
    "malformed cuda index": (["--device", "cuda:abc"], "unknown device 'cuda:abc'"),
    "unknown launcher": (["--launcher", "slurm"], "invalid choice: 'slurm'"),
    # numbers: finite and in range, each bound declared once in bnstudy.schema, named with its key and unit
    "LR huge": (["--set", "train.lr=1e308"], "train.lr must be a finite number at most 1000 (the SGD step size)"),
    "LR infinite": (["--set", "train.lr=inf"], "train.lr must be a finite number"),
    "LR nan": (["--set", "train.lr=nan"], "train.lr must be a finite number"),
    "LR an integer past float": (["--set", "train.lr=1" + "0" * 400], "train.lr must be a finite number, got an "
                                                                       "integer of 401 digits"),
    "width infinite": (["--set", "model.width=inf"], "model.width must be a finite number at most 64 (a multiplier"),
    "width huge": (["--set", "model.width=1000"], "model.width must be a finite number at most 64"),
    "noise nan": (["--set", "model.noise.r_mu=nan"], "model.noise.r_mu must be a finite number"),
    "noise scale infinite": (["--set", "model.noise.n_sigma=inf"], "model.noise.n_sigma must be a finite number "
                                                                    "at most 1000 (a scale factor)"),
    "noise negative infinite": (["--set", "model.noise.n_mu=-inf"], "model.noise.n_mu must be a finite number"),
    "threads huge": (["--set", "train.threads=100000"], "train.threads must be at most 1,024 (CPU threads)"),
    "steps huge": (["--set", f"train.steps={10**30}"], "train.steps must be at most 1,000,000,000 (SGD steps)"),
    "head huge": (["--set", f"model.head=[512, {2**40}]"], "model.head[1] must be at most 65,536 (units per"),
    "DLN width huge": (["--set", "model.dln_width=100000"], "model.dln_width must be at most 4,096 (units per"),
    "train size huge": (["--set", f"data.train_size={10**12}"], "data.train_size must be at most 1,000,000 (examples)"),
    "probe grid huge": (["--set", "landscape.points=10000000"], "landscape.points must be at most 1,000 (step sizes"),
    "probe step huge": (["--set", "train.lr=1000", "--set", "landscape.eta_max=5000"],
                        "landscape.eta_max * train.lr (the longest probe step) must be at most 1e+06"),
    "eta infinite": (["--set", "landscape.eta_max=inf"], "landscape.eta_max must be a finite number"),
    "curvature tol nan": (["--set", "curvature.tol=nan"], "curvature.tol must be a finite number at most 1 (a"),
    "curvature k huge": (["--set", "curvature.k=100000"], "curvature.k must be at most 64 (eigenvalues)"),
    "Lanczos restarts huge": (["--set", f"curvature.max_hvps={2**40}"], "curvature.max_hvps must be at most 100,000"),
    "seed past int64": (["--seed", "9223372036854775807"], "seed must be at most 2,147,483,647 (a random seed"),
    "seeds past int64": (["--seeds", "0", "99999999999999999999"], "seed must be at most 2,147,483,647"),
    "seed 2**31": (["--seed", str(2**31)], "seed must be at most 2,147,483,647 (a random seed; torch and numpy take "
                                           "31 bits), got 2147483648"),
    "seed negative": (["--seed", "-1"], "seed must be >= 0 (a random seed"),
    # names become folders: never a way out of --results-dir
    "experiment name ../": (file_with('name = "../escaped"\n' + ARM_A), "experiment name '../escaped' must be letters"),
    "experiment name absolute": (lambda t: file_with(f'name = "{t / "escaped"}"\n' + ARM_A)(t),
                                 "must be letters, digits, '-' and '_'"),
    "experiment name not a string": (file_with("name = 3\n" + ARM_A), "experiment name 3 must be letters"),
    "arm name ../": (file_with('[arms."../../escaped".model]\n'),
                     "arm name '../../escaped' must be letters, digits, '-', '_' and '.' (not '..')"),
    "arm name with a slash": (file_with('[arms."a/b".model]\n'), "arm name 'a/b' must be"),
    "arm name with a backslash": (file_with('[arms."a\\\\b".model]\n'), "arm name 'a\\\\b' must be"),
    "arm name hidden": (file_with('[arms.".a".model]\n'), "arm name '.a' must be"),
    "sweep label with a slash": (file_with('[sweep]\nkey = "train.lr"\nvalues = [0.1]\nlabel = "/../lr"\n' + ARM_A),
                                 "arm name 'a-/../lr0.1' must be"),
    # an experiment file of the wrong shape
    "arm not a table": (file_with("arms = {a = 5}\n"), "'arms.a' must be a table"),
    "preset arms not a list": (file_with("[presets.smoke]\narms = 5\n" + ARM_A), "'presets.smoke.arms' must be a list"),
    "sweep values not a list": (file_with('[sweep]\nkey = "train.lr"\nvalues = 3\n' + ARM_A), "'sweep.values' must be"),
}


def command(extra, results):
    if extra[:1] == ["--experiment-file"]:
        return ["run", extra[1], "--results-dir", str(results), "--no-progress", *extra[2:]]
    real_data = any(a.startswith("--data-dir") for a in extra)
    arms = [] if "--arms" in extra else ["--arms", "standard"]  # not the finished arm: that one must stay as it is
    return ["run", "noisy-bn", "--preset", "smoke", *arms, "--results-dir", str(results),
            "--no-progress", *([] if real_data else SYNTHETIC), *extra]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, finished, tmp_path, capsys):
    extra, words = BAD[case]
    if "without a GPU" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    extra = extra(tmp_path) if callable(extra) else extra
    before = snapshot(finished)
    with pytest.raises(SystemExit) if "invalid choice" in words else _returns(2) as outcome:
        outcome.code = main(command(extra, finished))
    err = capsys.readouterr().err.strip()
    assert words in err, err
    assert "Traceback" not in err and (err.count("\n") == 0 or err.startswith("usage:"))
    assert snapshot(finished) == before


class _returns:
    """Context that checks the exit code a call returned (argparse errors raise SystemExit(2) instead)."""

    def __init__(self, code):
        self.expected, self.code = code, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        assert self.code == self.expected
        return False


def test_truncated_real_data_file(cifar_dir, finished, tmp_path, capsys):
    """The real CIFAR-10 with one file cut short: named, one line, exit 2."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for source in (cifar_dir / "cifar-10-batches-py").iterdir():
        (folder / source.name).symlink_to(source)
    (folder / "data_batch_2").unlink()
    (folder / "data_batch_2").write_bytes((cifar_dir / "cifar-10-batches-py" / "data_batch_2").read_bytes()[:10_000])
    before = snapshot(finished)
    assert main(command(["--data-dir", str(tmp_path)], finished)) == 2
    err = capsys.readouterr().err.strip()
    assert "data_batch_2 has md5" in err and "corrupt or truncated" in err and "\n" not in err
    assert snapshot(finished) == before


def test_results_folder_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should be")
    assert main(command([], blocker / "results")) == 2
    assert "is not writable" in capsys.readouterr().err


def one_line(capsys, words):
    err = capsys.readouterr().err.strip()
    assert words in err and err.startswith("bnstudy: error: ") and "\n" not in err and "Traceback" not in err, err


def test_names_escaping_the_results_folder_create_nothing(tmp_path, capsys):
    results = tmp_path / "a" / "results"
    for name in ("../escaped", str(tmp_path / "escaped")):
        path = toml(tmp_path, f'name = "{name}"\n[arms.a.model]\nnorm = "none"\n')
        assert main(["run", path, "--results-dir", str(results), "--no-progress"]) == 2
        one_line(capsys, "must be letters, digits")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp.toml"]


def test_sweep_arm_names_keep_their_dots(tmp_path):
    from bnstudy.config import load_experiment

    path = toml(tmp_path, 'name = "x"\n[sweep]\nkey = "train.lr"\nvalues = [1e-06, 0.1, 2]\nlabel = "lr"\n'
                          '[base.data]\ndataset = "synthetic"\n[arms.batchnorm.model]\nnorm = "batch"\n')
    assert list(load_experiment(path).arms) == ["batchnorm-lr1e-06", "batchnorm-lr0.1", "batchnorm-lr2"]


def test_repeated_seeds_and_arms_run_once():
    from bnstudy.runner import plan

    configs = plan(load_experiment("noisy-bn"), "smoke", [3, 3, 1, 3], ["standard", "batchnorm", "standard"],
                   ["data.dataset=synthetic"])
    assert [(c.arm, c.seed) for c in configs] == [("standard", 3), ("standard", 1), ("batchnorm", 3), ("batchnorm", 1)]


def test_a_refusal_lists_every_difference_preset_first(finished, capsys):
    before = snapshot(finished)
    assert main(["run", "noisy-bn", "--preset", "quick", "--arms", "batchnorm", "--results-dir", str(finished),
                 "--no-progress", *SYNTHETIC, "--set", "activations.units=3", "--set", "curvature.k=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another configuration (preset: 'smoke' there, 'quick' now; model.width: " in err and "\n" not in err
    keys = [d.split(":")[0] for d in err.split("(", 1)[1].split("); use")[0].split("; ")]
    assert keys[-2:] == ["activations.units", "curvature.k"] and "train.steps" in keys and "data.train_size" in keys
    assert keys.index("model.width") < keys.index("train.steps") < keys.index("data.train_size")
    assert snapshot(finished) == before


def test_list_names_a_broken_experiment_file_and_lists_the_others(tmp_path, monkeypatch, capsys):
    import bnstudy.config

    (tmp_path / "noisy_bn.toml").write_text((bnstudy.config.EXPERIMENTS_DIR / "noisy_bn.toml").read_text())
    (tmp_path / "broken.toml").write_text("name = [oops\n")
    (tmp_path / "typo.toml").write_text('[arms.a.model]\nnorm = "nonee"\n')
    monkeypatch.setattr(bnstudy.config, "EXPERIMENTS_DIR", tmp_path)
    assert main(["list"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("noisy-bn") and "arms: standard, batchnorm" in out
    lines = err.strip().split("\n")
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"bnstudy: error: {tmp_path / 'broken.toml'}: malformed TOML")
    assert lines[1].startswith(f"bnstudy: error: {tmp_path / 'typo.toml'}: ")
    assert "unknown model.norm 'nonee'" in lines[1]


@pytest.mark.parametrize("readme, words", [("missing.md", "--readme"),
                                           ("no-markers.md", "has no <!-- claims:start -->")])
def test_a_bad_readme_writes_nothing(finished, tmp_path, capsys, readme, words):
    (tmp_path / "no-markers.md").write_text("# a README without the claims block\n")
    before = snapshot(finished)
    assert main(["report", "--results-dir", str(finished), "--readme", str(tmp_path / readme), "--no-figures"]) == 2
    one_line(capsys, words)
    assert snapshot(finished) == before and not (finished / "REPORT.md").exists()


@pytest.mark.parametrize("option, value", [("--width", "nan"), ("--width", "inf"), ("--width", "0"), ("--width", "1e9"),
                                           ("--min-run-time", "nan"), ("--min-run-time", "inf"),
                                           ("--min-run-time", "1e9")])
def test_bad_bench_options(tmp_path, capsys, option, value):
    assert main(["bench", "--device", "cpu", f"{option}={value}", "--results-dir", str(tmp_path)]) == 2
    one_line(capsys, f"{option} must be ")
    assert not any(tmp_path.iterdir())


def test_ctrl_c_while_parsing_arguments(monkeypatch, capsys):
    import bnstudy.cli

    class Interrupted:
        def parse_args(self, argv):
            raise KeyboardInterrupt

    monkeypatch.setattr(bnstudy.cli, "build_parser", Interrupted)
    try:
        code = main(["list"])
    except KeyboardInterrupt:  # re-raised, it would stop the whole pytest session
        pytest.fail("Ctrl-C while parsing the arguments escaped main")
    assert code == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"


INTERRUPTED = "bnstudy: interrupted; rerun the same command to resume from the last checkpoint"
INTERRUPT_IMPORT = """import sys
class Interrupt:
    def find_spec(self, name, *args):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["bnstudy", "list"]
{start}
"""


@pytest.mark.parametrize("start", ["import runpy; runpy.run_module('bnstudy', run_name='__main__')",  # python -m
                                   "from bnstudy.cli import main; sys.exit(main())"])  # the console script
@pytest.mark.parametrize("module", ["argparse", "bnstudy.config", "bnstudy.errors"])
def test_ctrl_c_while_importing(start, module):
    import subprocess
    import sys

    code = INTERRUPT_IMPORT.format(module=module, start=start)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, INTERRUPTED + "\n"), done.stderr


# ----------------------------------------------------------------------------------------------
# Property-based: the config loader only ever returns a config or raises ConfigError
# ----------------------------------------------------------------------------------------------
KEYS = ["data", "model", "train", "activations", "landscape", "ics", "curvature", "lr", "steps", "norm", "width",
        "dataset", "layers", "every", "batch_size", "cfg", "noise", "n_mu", "head", "bogus", "seed", "threads",
        "n_sigma", "r_mu", "r_sigma", "dln_depth", "dln_width", "train_size", "test_size", "eval_batch", "units",
        "eta_min", "eta_max", "points", "k", "tol", "max_hvps", "log_every", "eval_every", "checkpoint_every"]
EXTREMES = [math.nan, math.inf, -math.inf, 1e308, -1e308, 10**30, -10**30, 2**31, 2**63, 10**400, -10**400]
NUMBERS = st.one_of(st.integers(-5, 40), st.integers(-10**30, 10**30), st.sampled_from(EXTREMES),
                    st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.one_of(NUMBERS, st.text(max_size=6), st.booleans(),
                   st.lists(st.one_of(st.integers(-3, 20), NUMBERS), max_size=3))
REAL_KEYS = ["train.lr", "train.steps", "train.batch_size", "train.threads", "train.log_every", "train.eval_every",
             "train.checkpoint_every", "model.width", "model.head", "model.cfg", "model.dln_depth", "model.dln_width",
             "model.noise.n_mu", "model.noise.n_sigma", "model.noise.r_mu", "model.noise.r_sigma", "data.train_size",
             "data.test_size", "data.eval_batch", "activations.layers", "activations.units", "activations.every",
             "landscape.every", "landscape.eta_min", "landscape.eta_max", "landscape.points", "ics.every",
             "ics.layers", "curvature.every", "curvature.k", "curvature.tol", "curvature.max_hvps"]


def nest(pairs):
    """[("train.lr", 0.1), ...] -> {"train": {"lr": 0.1}, ...}"""
    tree: dict = {}
    for dotted, value in pairs:
        *sections, key = dotted.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return tree


CONFIGS = st.one_of(
    st.recursive(VALUES, lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12),
    st.lists(st.tuples(st.sampled_from(REAL_KEYS + ["seed"]), st.one_of(NUMBERS, VALUES)), max_size=4).map(nest))


def numbers(tree):
    """Every int and float in a config's nested dict, tuples included."""
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [x for item in tree for x in numbers(item)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def assert_valid(config):
    """A config that validates holds finite numbers only, each small enough for int64, float32 and torch."""
    assert isinstance(config, RunConfig)
    assert all(abs(x) < 2**31 if isinstance(x, int) else math.isfinite(x) and abs(x) < 1e7
               for x in numbers(dataclasses.asdict(config)))


@settings(max_examples=300, deadline=None)
@given(CONFIGS)
def test_fuzzed_configs_give_a_config_or_a_clear_error(values):
    if not isinstance(values, dict):
        values = {"train": values}
    try:
        config = build(RunConfig, values)
        validate(config)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert_valid(config)


VALUE_TEXTS = st.one_of(
    st.sampled_from(["nan", "+nan", "-nan", "inf", "+inf", "-inf", "1e308", "-1e308", "1e400", "9" * 5000, "[1, inf]",
                     "[nan]", f"[{10**30}]", "0x7fffffffffffffff", "1_000", "true", '"x"', "", " ", "[]"]),
    st.integers(-10**30, 10**30).map(str), st.integers(-3, 70).map(str), st.sampled_from(EXTREMES).map(str),
    st.floats().map(repr), st.text(max_size=10))
OVERRIDES = st.builds("{}={}".format, st.sampled_from(REAL_KEYS + ["bogus", "train.bogus", "train", "model.noise"]),
                      VALUE_TEXTS)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), OVERRIDES))
def test_fuzzed_overrides_give_a_dict_or_a_clear_error(text):
    try:
        assert isinstance(parse_override(text), dict)
    except ConfigError as err:
        assert "--set" in str(err) and "\n" not in str(err)


@functools.cache
def noisy_bn():
    return load_experiment("noisy-bn")


@settings(max_examples=400, deadline=None)
@given(st.lists(OVERRIDES, min_size=1, max_size=3), st.one_of(st.integers(0, 3), st.integers(-2**70, 2**70)))
def test_fuzzed_real_keys_give_a_finite_config_or_a_clear_error(overrides, seed):
    """`--set <real key>=<value>` (nan, inf, huge integers, text...) through run_config: ConfigError, or a config
    whose numbers are all finite and in range."""
    try:
        config = run_config(noisy_bn(), "batchnorm", seed, "smoke", overrides)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert_valid(config)
