"""The Ray launcher gives the numbers the local launcher gives (a real local Ray on 127.0.0.1), and runs the probes
one registered outside the package."""
import pytest
import torch

from bnstudy.reading import Results
from bnstudy.recording import SCHEMAS, table_bytes
from bnstudy.runner import run_experiment
from test_registry import registered  # noqa: F401  (a fixture: the gradient-norm probe and its options, registered)

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

SMOKE = dict(experiment="noisy-bn", preset="smoke", seeds=[0, 1], arms=["standard", "noisy-batchnorm"],
             device="cpu", overrides=["data.dataset=synthetic"], progress=False)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_ray_launcher_matches_local_bit_for_bit(tmp_path, local_ray):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task runs with one thread per CPU it asked for: the same arithmetic
    try:
        local = run_experiment(results_dir=str(tmp_path / "local"), launcher="local", **SMOKE)
    finally:
        torch.set_num_threads(threads)
    remote = run_experiment(results_dir=str(tmp_path / "ray"), launcher="ray", **SMOKE)
    assert [m["status"] for m in remote] == ["complete"] * 4
    for meta in local:
        run = f"noisy-bn/{meta['arm']}/seed-{meta['seed']}"
        for name in SCHEMAS:
            assert table_bytes(tmp_path / "local" / run, name) == table_bytes(tmp_path / "ray" / run, name), run
    again = run_experiment(results_dir=str(tmp_path / "ray"), launcher="ray", **SMOKE)  # all complete: skipped
    assert again == remote


@pytest.mark.usefixtures("registered")
def test_a_probe_registered_outside_the_package_runs_in_ray_workers_with_its_options(tmp_path, local_ray):
    # the workers import bnstudy afresh: only what the launcher ships tells them of the probe defined in this test's
    # module, and of its options (every=3 here, against its default of 2)
    run_experiment(**{**SMOKE, "seeds": [0], "arms": ["batchnorm"],
                      "overrides": ["data.dataset=synthetic", "train.steps=6", "probes.gradient-norm.every=3"]},
                   results_dir=str(tmp_path), launcher="ray")
    rows = Results(tmp_path, "noisy-bn").tables["probes"]
    assert sorted(rows[rows.probe == "gradient-norm"].step) == [0, 3]
