"""A measurement of one's own, added without editing bnstudy: a probe, its summary and its figure, a registry line each.

The probe below is defined here, outside the package: the norm of the gradient on the step's batch, every other
step, by the shared functional helper (so it leaves no trace). `train.register_probe` puts it in every run,
`analysis.register_summary` adds its column to every run summary and `plots.register_figure` lets an experiment file
name its figure. It rides a smoke run of `bnstudy run` and must change nothing else the run records.
"""
import dataclasses
import json
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from bnstudy import analysis, config, plots, schema, train
from bnstudy.cli import main
from bnstudy.probes.callback import Probe
from bnstudy.probes.functional import Evaluator, flat_norm, untouched
from bnstudy.reading import Results
from bnstudy.schema import probe_options, setting


@dataclass(frozen=True)
class GradientNormOptions:
    """The probe's own settings, bounded as every section of bnstudy's is: [base.probes.gradient-norm] every = 3."""

    every: int = setting(2, "steps between probes", at_least=1, at_most=10**9)


class GradientNormProbe(Probe):
    def __init__(self, every: int):
        self.every = every

    def measure(self, ctx) -> dict[str, list[dict]]:
        with untouched(ctx.model):
            evaluator = Evaluator(ctx.model, ctx.loss_fn, ctx.batch)
            _, grads = evaluator.loss_and_grad(evaluator.params)
        return {"probes": [{"step": ctx.step, "probe": "gradient-norm", "layer": 0, "eta": None, "metric": "norm",
                            "value": float(flat_norm(grads))}]}


def gradient_norm_probe(config, model) -> list[Probe]:
    return [GradientNormProbe(probe_options(config, "gradient-norm").every)]


def gradient_norm_summary(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    rows = tables["probes"][tables["probes"].probe == "gradient-norm"]
    if rows.empty:
        return []
    return [rows.groupby(["arm", "seed"]).value.median().rename("gradient_norm_median").reset_index()]


def gradient_norm_figure(results: Results, arms, **options):
    rows = results.tables["probes"][results.tables["probes"].probe == "gradient-norm"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for arm, group in rows.groupby("arm"):
        ax.plot(group.step, group.value, label=arm)
    ax.set(xlabel="training step", ylabel="‖∇L‖ on the step's batch", yscale="log")
    ax.legend()
    return plots.finish(fig, f"{results.experiment}: gradient norm", results.caption())


def smoke_run(results) -> None:
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(results),
                 "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=6"]) == 0


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(train, "PROBES", list(train.PROBES))  # the registries as they were, after the test
    monkeypatch.setattr(analysis, "SUMMARIES", list(analysis.SUMMARIES))
    monkeypatch.setattr(plots, "FIGURES", dict(plots.FIGURES))
    monkeypatch.setattr(plots, "NEEDS", dict(plots.NEEDS))
    monkeypatch.setattr(config, "FIGURE_KINDS", config.FIGURE_KINDS)
    monkeypatch.setattr(schema, "PROBE_OPTIONS", dict(schema.PROBE_OPTIONS))
    train.register_probe(gradient_norm_probe, options=("gradient-norm", GradientNormOptions))
    analysis.register_summary(gradient_norm_summary)
    plots.register_figure("gradient_norm", gradient_norm_figure, needs=("probes", "gradient-norm"))


def test_a_probe_from_outside_the_package_runs_is_summarized_and_changes_nothing_else(tmp_path, registered):
    smoke_run(tmp_path / "with")
    results = Results(tmp_path / "with", "noisy-bn")
    rows = results.tables["probes"][results.tables["probes"].probe == "gradient-norm"]
    assert sorted(rows.step) == [0, 2, 4] and (rows.value > 0).all()
    summary = analysis.run_summary(results.meta, results.tables)
    assert summary.gradient_norm_median.iloc[0] == pytest.approx(rows.value.median())
    own = tmp_path / "own.toml"  # an experiment file of one's own that names the new figure
    own.write_text((config.EXPERIMENTS_DIR / "noisy_bn.toml").read_text(encoding="utf-8").replace(
        'figures = ["training", "activations", "moments"]', 'figures = ["training", "gradient_norm"]'),
        encoding="utf-8")
    paths = plots.draw_figures(results, config.load_experiment(str(own)))
    assert [p.name for p in paths] == ["training.png", "gradient_norm.png"] and all(p.stat().st_size for p in paths)

    train.PROBES.remove(gradient_norm_probe)
    smoke_run(tmp_path / "without")
    run = "noisy-bn/batchnorm/seed-0"
    for table in ("metrics.csv.xz", "activations.csv.xz"):  # the same training, to the bit
        assert (tmp_path / "with" / run / table).read_bytes() == (tmp_path / "without" / run / table).read_bytes()
    finals = [json.loads((tmp_path / side / run / "meta.json").read_text())["final_train_loss"]
              for side in ("with", "without")]
    assert finals[0] == finals[1]


def test_an_own_probes_options_are_set_by_set_checked_and_stored_with_the_run(tmp_path, registered, capsys):
    results = tmp_path / "results"
    args = ["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(results),
            "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=6"]
    assert main([*args, "--set", "probes.gradient-norm.every=3"]) == 0
    rows = Results(results, "noisy-bn").tables["probes"]
    assert sorted(rows[rows.probe == "gradient-norm"].step) == [0, 3]
    stored = json.loads((results / "noisy-bn" / "batchnorm" / "seed-0" / "config.json").read_text())
    assert stored["probes"] == {"gradient-norm": {"every": 3}}

    capsys.readouterr()
    for bad, said in (("probes.gradient-norm.every=0", "probes.gradient-norm.every must be >= 1 (steps between"),
                      ("probes.gradient-norm.often=2", "unknown key 'probes.gradient-norm.often'"),
                      ("probes.unknown.every=2", "probes.unknown: no probe registered options of that name")):
        assert main([*args, "--results-dir", str(tmp_path / "bad"), "--set", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "bad").exists()


@dataclasses.dataclass(frozen=True)
class Options:
    every: int = 2


@pytest.mark.parametrize("name, options, said", [
    ("mine", Options(), "must be a dataclass class, got Options(every=2) (an instance: pass its class)"),
    ("mine.x", Options, "probe name 'mine.x': --set probes.NAME.FIELD reaches letters, digits, '_' and '-' only"),
    ("mine", dataclasses.make_dataclass("O", [("η", float, 0.1)], frozen=True), "option 'η' of probe 'mine': --set "
                                                                                 "reaches names of letters"),
    ("mine", dataclasses.make_dataclass("O", [("at", set, dataclasses.field(default_factory=set))], frozen=True),
     "option 'at' of probe 'mine': its type <class 'set'> is none that an experiment file or --set can give"),
    ("mine", dataclasses.make_dataclass("O", [("level", float, float("nan"))], frozen=True),
     "option 'level' of probe 'mine': its default nan is not a finite number"),
])
def test_options_that_set_cannot_reach_or_give_are_refused_when_registered(monkeypatch, name, options, said):
    from bnstudy.config import ConfigError

    monkeypatch.setattr(schema, "PROBE_OPTIONS", dict(schema.PROBE_OPTIONS))
    with pytest.raises(ConfigError) as refused:
        train.register_probe(gradient_norm_probe, options=(name, options))
    assert said in str(refused.value) and name not in schema.PROBE_OPTIONS


@dataclasses.dataclass(frozen=True)
class LevelOptions:
    level: float = 0.5  # no declared bounds: a finite number is still required


def test_a_nan_option_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "PROBES", list(train.PROBES))
    monkeypatch.setattr(schema, "PROBE_OPTIONS", dict(schema.PROBE_OPTIONS))
    train.register_probe(lambda config, model: [], options=("level", LevelOptions))
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(tmp_path),
                 "--no-progress", "--set", "data.dataset=synthetic", "--set", "probes.level.level=nan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "probes.level.level must be a finite number, got nan" in err, err
    assert not (tmp_path / "noisy-bn" / "batchnorm").exists()
