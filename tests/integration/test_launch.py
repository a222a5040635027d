"""Launchers: groups of runs in this process or on a real local Ray instance, with failures pinned on their run."""

import pytest
import yaml

from conftest import tiny_config
from grokscope.experiments import run
from grokscope.experiments.launch import run_groups
from grokscope.store import Run


def groups(tmp_path):
    good = [tiny_config(seed=s, train={"steps": 20}) for s in (0, 1)]
    broken = tiny_config(seed=2, train={"steps": 20}, model={"init_from": str(tmp_path / "missing.safetensors")})
    return [
        (good, [tmp_path / "a0", tmp_path / "a1"]),
        ([good[0].with_seed(3), broken], [tmp_path / "b0", tmp_path / "b1"]),
    ]


def check(outcomes, tmp_path):
    (a0, a1), (b0, b1) = outcomes
    assert a0.ok and a1.ok and b0.ok and a0.final["step"] == 20
    assert not b1.ok and "missing.safetensors" in b1.error
    assert Run.open(tmp_path / "b0").summary() is not None  # the good run of the failing group still finished
    assert not (tmp_path / "b1" / "summary.json").exists()


def test_local_launcher_isolates_a_failing_run(tmp_path):
    check(run_groups(groups(tmp_path), device="cpu", progress=False), tmp_path)
    # Rerun: finished runs come back as they are, the broken one fails again, nothing else trains.
    check(run_groups(groups(tmp_path), device="cpu", progress=False), tmp_path)


@pytest.mark.slow
def test_ray_launcher_on_a_local_ray_instance_with_two_workers(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        check(run_groups(groups(tmp_path), launcher="ray", device="cpu"), tmp_path)
        assert len(ray.nodes()) == 1 and ray.cluster_resources()["CPU"] == 2
        # A whole sweep through the experiment dispatcher, its two conditions as two Ray tasks.
        (tmp_path / "base.yaml").write_text(tiny_config(train={"steps": 20}).to_yaml())
        spec = {"kind": "sweep", "name": "s", "base": "base.yaml", "grid": {"optim.weight_decay": [0, 1]}}
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
        lines = run(tmp_path / "sweep.yaml", tmp_path / "out", device="cpu", progress=False, launcher="ray")
        assert lines and (tmp_path / "out" / "s" / "results.csv").is_file()
        assert all(Run.open(d).summary() for d in (tmp_path / "out" / "s").glob("wd=*"))
    finally:
        ray.shutdown()
