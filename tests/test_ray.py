"""The Ray launcher gives the numbers the local launcher gives (a real local Ray on 127.0.0.1)."""
import pytest
import torch

from bnstudy.recording import SCHEMAS, table_bytes
from bnstudy.runner import run_experiment

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
