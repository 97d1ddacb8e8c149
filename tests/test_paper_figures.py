"""The paper-figures experiment: one training per configuration, read by every figure and claim that needs it."""
import pytest

from bnstudy.config import PRESETS, list_experiments, load_experiment, run_config
from bnstudy.manifest import describe
from bnstudy.report import by_preset


def configuration(config) -> tuple:
    return config.model.norm, config.train.lr, config.model.init


def test_the_long_preset_is_the_papers_schedule_at_quicks_width():
    exp = load_experiment("paper-figures")
    long, quick, paper = (run_config(exp, "standard", 0, p) for p in ("long", "quick", "paper"))
    assert (long.model.width, quick.model.width, paper.model.width) == (0.25, 0.25, 1.0)
    schedule = (long.train.steps, long.train.batch_size, long.train.lr)
    assert schedule == (paper.train.steps, 128, 0.1) == (15_000, 128, 0.1)
    assert (long.model.init, long.data.augment) == ("glorot", False)
    assert long.model == quick.model and long.data == quick.data  # quick and long differ only in the schedule


def test_every_experiment_loads_at_every_preset():
    for name in list_experiments():
        exp = load_experiment(name)
        for preset in PRESETS:
            for arm in exp.arms_for(preset):
                run_config(exp, arm, 0, preset)


def test_no_configuration_is_trained_twice_and_all_eleven_are_there():
    exp = load_experiment("paper-figures")
    configs = [configuration(run_config(exp, arm, 0, "long")) for arm in exp.arms_for("long")]
    assert len(configs) == len(set(configs)) == 11
    wanted = {(n, 0.1) for n in ("none", "batch", "noisy-batch", "noise-only", "l1", "l2", "linf")}
    wanted |= {(n, lr) for n in ("none", "batch") for lr in (0.5, 0.01)}
    assert {c[:2] for c in configs} == wanted


def test_every_run_carries_every_probe_a_figure_or_claim_needs():
    exp = load_experiment("paper-figures")
    for arm in ("standard", "batchnorm"):  # the claims 5-8, 11 and 13a-d read every probe of LR 0.1's two
        config = run_config(exp, arm, 0, "long")
        assert set(config.activations.layers) >= {2, 3, 9, 11, 13} and set(config.ics.layers) == {5, 10}
        assert config.ics.every and config.landscape.every and config.landscape.filter_every
        assert config.curvature.every and config.weights.every and config.activations.density_at
    for arm in ("standard-lr0.01", "batchnorm-lr0.01"):  # claims 5 and 13d at LR 0.01
        assert run_config(exp, arm, 0, "long").ics.every


# What each figure kind needs from a run's configuration, written out here rather than read from bnstudy.plots
def _layers_recorded(config, spec) -> bool:
    return bool(config.activations.layers) and set(spec.get("layers", ())) <= set(config.activations.layers)


FIGURE_NEEDS = {
    "training": lambda config, spec: True,
    "activations": _layers_recorded, "moments": _layers_recorded,
    "densities": lambda config, spec: _layers_recorded(config, spec) and bool(config.activations.density_at),
    "ics": lambda config, spec: config.ics.every > 0,
    "landscape": lambda config, spec: config.landscape.every > 0,
    "grad_vs_eta": lambda config, spec: config.landscape.every > 0,
    "landscape_filter": lambda config, spec: config.landscape.filter_every > 0,
    "landscape_windows": lambda config, spec: config.landscape.every > 0,
    "curvature": lambda config, spec: config.curvature.every > 0,
}


@pytest.mark.parametrize("preset", ["smoke", "long", "paper"])
def test_every_figure_finds_its_probe_in_every_run_it_shows(preset):
    """Groups 4 and 5 carry only what their figures read: a figure that shows one of them must find its probe."""
    exp = load_experiment("paper-figures")
    configs = {arm: run_config(exp, arm, 0, preset) for arm in exp.arms_for(preset)}
    for name, spec in exp.plots.items():
        for wanted in spec["runs"]:
            arms = [a for a, c in configs.items() if (c.model.norm, c.train.lr) == (wanted["norm"], wanted["lr"])]
            assert len(arms) == 1, (name, wanted, arms)
            assert FIGURE_NEEDS[spec["kind"]](configs[arms[0]], spec), (name, arms[0], spec["kind"])


def test_the_runs_only_figure_1_and_claim_1_read_record_no_probe():
    """LR 0.5's two runs are read for their accuracy alone (Fig. 1, claim 1): their probes would cost steps and
    tracked bytes for nothing."""
    exp = load_experiment("paper-figures")
    for arm in ("standard-lr0.5", "batchnorm-lr0.5"):
        config = run_config(exp, arm, 0, "long")
        assert not config.activations.layers and not config.ics.every and not config.curvature.every
        assert not (config.landscape.every or config.landscape.filter_every or config.weights.every)


def test_the_dlns_presets_are_one_protocol_and_vggs_are_not():
    dln = describe(load_experiment("dln"))
    assert dln.same_runs("quick", "long") and dln.same_runs("quick", "paper")
    assert not describe(load_experiment("landscape")).same_runs("quick", "long")


def test_runs_count_only_at_the_presets_of_their_configuration():
    import pandas as pd
    summaries = {"dln": pd.DataFrame({"arm": ["standard-lr1e-6"], "seed": [0], "preset": ["quick"]}),
                 "paper-figures": pd.DataFrame({"arm": ["standard"], "seed": [0], "preset": ["long"]}),
                 "landscape": pd.DataFrame({"arm": ["standard"], "seed": [0], "preset": ["quick"]})}
    split = by_preset(summaries)
    assert set(split) == {"quick", "long"}
    assert set(split["quick"]) == {"dln", "landscape"} and set(split["long"]) == {"dln", "paper-figures"}


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """paper-figures at the smoke preset on the synthetic set: eleven runs of 12 steps, every probe."""
    from bnstudy.runner import run_experiment
    results = tmp_path_factory.mktemp("results")
    run_experiment("paper-figures", "smoke", [0], results_dir=str(results), progress=False,
                   overrides=["data.dataset=synthetic"])
    return results


def test_two_figures_that_need_one_configuration_read_one_run(smoke_results):
    from bnstudy.reading import Results
    exp, results = load_experiment("paper-figures"), Results(smoke_results, "paper-figures")
    fig1, fig4 = (results.matching(exp.plots[name]["runs"]) for name in ("fig1-training", "fig4-landscape"))
    standard = {"norm": "none", "lr": 0.1}
    read = [figure.matching([standard]).meta[["arm", "seed"]].values.tolist() for figure in (fig1, fig4)]
    assert read[0] == read[1] == [["standard", 0]]  # the same run folder, trained once
    assert sorted(p.name for p in (smoke_results / "paper-figures").iterdir() if p.is_dir()) == sorted(exp.arms)


def test_every_figure_of_the_paper_is_drawn_from_the_runs(smoke_results):
    from bnstudy.plots import plot_experiment
    paths = plot_experiment("paper-figures", str(smoke_results))
    names = {p.stem for p in paths}
    for fig in ("fig1-training", "fig2-activations", "fig3a-ics", "fig4-landscape", "fig4-landscape-filter",
                "fig5a-training", "fig6-densities", "fig8-moments", "fig11-grad-vs-eta", "fig12-landscape"):
        assert fig in names and (smoke_results / "paper-figures" / "figures" / f"{fig}.png").stat().st_size > 10_000


def test_a_figure_left_with_another_figures_runs_is_not_drawn_twice(tmp_path, capsys):
    """The width ladder trains standard and batchnorm alone: fig2-training and fig5a-training, missing their other
    arms, would be fig1-training again, byte for byte, three times in the tracked tree."""
    from bnstudy.plots import plot_experiment
    from bnstudy.runner import run_experiment
    run_experiment("paper-figures", "smoke", [0], results_dir=str(tmp_path), progress=False,
                   overrides=["data.dataset=synthetic"], arms=["standard", "batchnorm"])
    stale = tmp_path / "paper-figures" / "figures" / "fig5a-training.png"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"an older drawing, from when the lp runs were there")
    names = {p.stem for p in plot_experiment("paper-figures", str(tmp_path))}
    assert "fig1-training" in names and not {"fig2-training", "fig5a-training"} & names and not stale.exists()
    assert "figure fig5a-training not drawn: its runs present are those of fig1-training" in capsys.readouterr().err
    assert {"fig1-activations", "fig2-activations", "fig4-landscape", "fig12-landscape"} <= names  # layers, options


def test_the_claims_find_the_runs_by_configuration_and_name_the_preset(smoke_results):
    """At smoke every rule runs on paper-figures' runs (found by norm and LR), and says smoke is not its scale."""
    from bnstudy.report import collect, verdicts
    summaries, _ = collect(smoke_results)
    judged = verdicts(summaries)["smoke"]
    measured = {claim.number: verdict for claim, verdict in judged}
    for number in ("1", "1b (ours)", "3", "4", "6", "6b (ours)", "7", "8", "11 (ours, beyond the paper)",
                   "13a (ours)", "13b (ours)", "13c (ours)"):
        assert "not smoke" in measured[number].measured, (number, measured[number].measured)
        assert measured[number].presets == ("smoke",)
    assert "waiting for dln" in measured["5"].measured  # the DLN part has no run here: said, not guessed
