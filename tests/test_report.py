"""`bnstudy report` reads the results tree alone: each folder describes itself (experiment.json); experiment files
without runs are listed as not run yet, and a folder that cannot say what it is stops the report with one line."""
from bnstudy import config as config_module
from bnstudy.cli import main
from bnstudy.manifest import MANIFEST
from bnstudy.report import collect


def smoke(results) -> None:
    assert main(["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "--results-dir", str(results),
                 "--no-progress", "--set", "data.dataset=synthetic", "--set", "train.steps=4"]) == 0


def test_the_report_reads_the_folders_manifest_not_the_experiment_files(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    smoke(results)
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "noisy_bn.toml").write_text("name = 'noisy-bn'\n[arms\n")  # the file breaks after the run
    monkeypatch.setattr(config_module, "EXPERIMENTS_DIR", experiments)
    assert main(["report", "--results-dir", str(results), "--no-figures"]) == 0
    report = (results / "REPORT.md").read_text(encoding="utf-8")
    assert "## noisy-bn: Noisy BatchNorm" in report  # the title the run was made with

    (results / "noisy-bn" / MANIFEST).unlink()  # a folder from before manifests: today's file must describe it
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "noisy_bn.toml: malformed TOML" in err[-1] and "Traceback" not in "".join(err)


def test_an_experiment_without_runs_is_skipped(tmp_path):
    assert collect(tmp_path) == ({}, {})  # every real experiment file, none run under an empty folder


def test_a_results_folder_within_the_results_is_reported_with_them_and_judged_apart(tmp_path, capsys):
    """The width ladder's runs (results/width-0.125) and a GPU's paper runs (results/paper) sit in results folders of
    their own: one report covers them, each its own section, and no verdict pools two widths."""
    from bnstudy.cli import main
    from bnstudy.report import collect

    smoke = ["--preset", "smoke", "--arms", "standard", "batchnorm", "--no-progress", "--set", "data.dataset=synthetic"]
    assert main(["run", "noisy-bn", *smoke, "--results-dir", str(tmp_path)]) == 0
    assert main(["run", "noisy-bn", *smoke, "--set", "model.width=0.125",
                 "--results-dir", str(tmp_path / "width-0.125")]) == 0
    summaries, found = collect(tmp_path)
    assert sorted(found) == ["noisy-bn", "width-0.125/noisy-bn"]
    assert sorted(summaries["noisy-bn"].width) == [0.0625, 0.0625, 0.125, 0.125]
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 0
    report = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    assert "## noisy-bn:" in report and "## width-0.125/noisy-bn:" in report
    assert "verdict (smoke (width 0.0625))" in report and "verdict (smoke (width 0.125))" in report
    assert (tmp_path / "width-0.125" / "noisy-bn" / "summary.csv").exists()
