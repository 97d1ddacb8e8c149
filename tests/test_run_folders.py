"""Run folders and experiment files as a hostile user leaves them: each case one clear line, nothing lost."""
import json
import math

import pytest

from bnstudy.cli import main
from bnstudy.config import FIGURE_KINDS, ConfigError, EXPERIMENTS_DIR, load_experiment
from bnstudy.recording import RunDir


def test_meta_json_is_strict_json_with_null_for_a_non_finite_number(tmp_path):
    run = RunDir(tmp_path, "x", "a", 0)
    run.path.mkdir(parents=True)
    run.write_meta({"final_train_loss": math.nan, "curve": [1.0, math.inf], "status": "diverged"})
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    meta = json.loads(run.meta_path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert meta == {"final_train_loss": None, "curve": [1.0, None], "status": "diverged"}


def test_the_figure_kinds_an_experiment_may_name_are_the_ones_plots_draws():
    from bnstudy.plots import FIGURES
    assert set(FIGURES) == set(FIGURE_KINDS)


@pytest.mark.parametrize("line", ['figures = ["nope"]', '[plots.f]\nkind = "nope"\nruns = [{ norm = "none" }]',
                                  '[plots.f]\nkind = "training"\nruns = [{ nrom = "none" }]'])
def test_an_unknown_figure_is_refused_when_the_file_loads(tmp_path, line):
    path = tmp_path / "mine.toml"
    path.write_text(f'family = "vgg"\nname = "mine"\n{line}\n[arms.standard.model]\nnorm = "none"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="mine.toml"):
        load_experiment(str(path))


def test_plot_takes_the_experiment_file_that_run_took(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    text = (EXPERIMENTS_DIR / "noisy_bn.toml").read_text(encoding="utf-8").replace('name = "noisy-bn"', 'name = "mine"')
    path.write_text(text, encoding="utf-8")
    common = ["--results-dir", str(tmp_path / "r")]
    assert main(["run", str(path), "--preset", "smoke", "--arms", "standard", "--no-progress",
                 "--set", "data.dataset=synthetic", *common]) == 0
    assert main(["plot", str(path), *common]) == 0
    assert (tmp_path / "r" / "mine" / "figures" / "training.png").exists()


def test_a_run_not_finished_is_left_out_of_figures_and_numbers_and_said(tmp_path, capsys):
    from bnstudy.reading import Results
    from bnstudy.report import has_runs
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "standard", "--seeds", "0", "1", "--no-progress",
                 "--results-dir", str(tmp_path), "--set", "data.dataset=synthetic"]) == 0
    RunDir(tmp_path, "noisy-bn", "standard", 1).update_meta(status="running")  # as a run killed part way leaves it
    capsys.readouterr()
    results = Results(tmp_path, "noisy-bn")
    assert list(results.meta.seed) == [0] and "(n=1)" in results.caption()
    assert "standard/seed-1: not finished (running)" in capsys.readouterr().err
    assert sorted(Results(tmp_path, "noisy-bn", unfinished=True).meta.seed) == [0, 1]  # asked for: read
    RunDir(tmp_path, "noisy-bn", "standard", 0).update_meta(status="running")
    assert not has_runs(tmp_path, "noisy-bn")  # the report lists it as not run yet, rather than failing
