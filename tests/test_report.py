"""`bnstudy report` over the experiment files: one without runs is "not run yet"; a malformed one is an error."""
from bnstudy import config as config_module
from bnstudy.cli import main
from bnstudy.report import collect


def test_a_malformed_experiment_file_stops_the_report_with_one_line(tmp_path, monkeypatch, capsys):
    """collect caught every ConfigError around load_experiment: a broken file read as 'not run yet'."""
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "broken.toml").write_text("name = 'broken'\n[arms\n")
    monkeypatch.setattr(config_module, "EXPERIMENTS_DIR", experiments)
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.toml: malformed TOML" in err[0]


def test_an_experiment_without_runs_is_skipped(tmp_path):
    assert collect(tmp_path) == ({}, {})  # every real experiment file, none run under an empty folder
