"""Bad input: one clear line naming the problem, exit code 2, no traceback, results on disk untouched."""
import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnstudy.cli import main
from bnstudy.config import ConfigError, RunConfig, build, parse_override, validate
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


BAD = {  # name: (extra arguments, or a function of tmp_path returning them; words the message must contain)
    "malformed TOML": (lambda t: ["--experiment-file", toml(t, "name = [oops\n")], "malformed TOML"),
    "unknown key in a file": (lambda t: ["--experiment-file", toml(t, "[arms.a.train]\nlrr = 1\n")], "unknown key 'train.lrr'"),
    "wrong type": (["--set", "train.steps=\"ten\""], "train.steps must be an integer"),
    "LR zero": (["--set", "train.lr=0"], "train.lr must be > 0"),
    "LR negative": (["--set", "train.lr=-0.1"], "train.lr must be > 0"),
    "steps zero": (["--set", "train.steps=0"], "train.steps must be > 0"),
    "batch larger than the dataset": (["--set", "train.batch_size=100000"], "larger than the training set"),
    "unknown arm": (["--arms", "bachnorm"], "unknown arm 'bachnorm'"),
    "unknown norm": (["--set", "model.norm=bn"], "unknown model.norm 'bn'"),
    "unknown cfg": (["--set", "model.cfg=17"], "unknown model.cfg 17"),
    "unknown preset": (["--preset", "huge"], "invalid choice: 'huge'"),
    "layer out of range": (["--set", "activations.layers=[0]"], "layer #0 out of range"),
    "--set on a missing key": (["--set", "train.momentum=0.9"], "--set train.momentum: no such key"),
    "--set without a value": (["--set", "train.lr"], "--set expects section.key=value"),
    "missing data folder": (["--data-dir", "/nonexistent/cifar"], "CIFAR-10 not found"),
    "wrong checksum": (lambda t: ["--data-dir", str(cifar_like(t / "d" / "cifar-10-batches-py"))], "matches no known copy"),
    "unknown device": (["--device", "tpu"], "unknown device 'tpu'"),
    "cuda without a GPU": (["--device", "cuda"], "no CUDA GPU"),
    "cuda:0 without a GPU": (["--device", "cuda:0"], "--device cuda:0: no CUDA GPU"),
    "malformed cuda index": (["--device", "cuda:abc"], "unknown device 'cuda:abc'"),
    "unknown launcher": (["--launcher", "slurm"], "invalid choice: 'slurm'"),
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


# ----------------------------------------------------------------------------------------------
# Property-based: the config loader only ever returns a config or raises ConfigError
# ----------------------------------------------------------------------------------------------
KEYS = ["data", "model", "train", "activations", "landscape", "ics", "curvature", "lr", "steps", "norm", "width",
        "dataset", "layers", "every", "batch_size", "cfg", "noise", "n_mu", "head", "bogus"]
VALUES = st.one_of(st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                   st.booleans(), st.lists(st.integers(-3, 20), max_size=3))
CONFIGS = st.recursive(VALUES, lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)


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
        assert isinstance(config, RunConfig)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_fuzzed_overrides_give_a_dict_or_a_clear_error(text):
    try:
        assert isinstance(parse_override(text), dict)
    except ConfigError as err:
        assert "--set" in str(err)
