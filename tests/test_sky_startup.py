"""What a SkyPilot plan assumes per batch (``SkyPilotBackend.capacity``): processes from the task's
resources, and the start-up measured on earlier runs of an --infra (``skypilot/startup.py``),
without SkyPilot running."""

from __future__ import annotations

import pytest
import yaml

from qec_kiln._backends.skypilot import startup
from qec_kiln._backends.skypilot.backend import SkyPilotBackend, packaged_yaml_text


def task_yaml(tmp_path, cpus) -> str:
    cfg = yaml.safe_load(packaged_yaml_text("sinter_job.yaml"))
    cfg["resources"]["cpus"] = cpus
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize(("cpus", "flag", "want"), [
    (1, None, 1), ("4+", None, 4), ("16+", "2", 2), ("8", None, 8)])
def test_processes_come_from_the_task_or_cpus(tmp_path, cpus, flag, want):
    b = SkyPilotBackend()
    opts = b.options({"yaml_path": task_yaml(tmp_path, cpus), "cpus": flag})
    assert b.capacity(opts).at(3).processes == want
    assert b.capacity(opts).at(3).surely_processes == want
    assert b.capacity(b.options({"yaml_path": opts.yaml_path, "processes": 3})).at(3).processes == 3


def test_packaged_task_plans_16_and_a_missing_yaml_falls_back(tmp_path):
    b = SkyPilotBackend()
    assert b.capacity(b.options()).at(1).processes == 16
    assert b.capacity(b.options({"yaml_path": str(tmp_path / "nope.yaml")})).at(1).processes == 16


def queue_record(job_id, submitted, end, duration, status="SUCCEEDED", recoveries=0):
    return {"job_id": job_id, "status": status, "submitted_at": submitted, "end_at": end,
            "job_duration": duration, "recovery_count": recoveries}


def test_status_records_the_start_up_and_the_plan_uses_its_median():
    b = SkyPilotBackend()
    opts = b.options({"infra": "slurm"})
    assert startup.measured_startup_seconds("slurm") is None
    assert b.capacity(opts).at(2).startup_seconds == b.startup_seconds == 360.0
    launches = [{"job_ids": [1, 2, 3, 4, 5], "infra": "slurm"}, {"job_ids": [9], "infra": "aws"},
                {"job_ids": [8], "infra": "slurm", "pool": "kiln-pool-x"}]
    records = [queue_record(1, 1000.0, 1200.0, 100.0),  # 100 s
               queue_record(2, 1000.0, 1150.0, 70.0),  # 80 s
               queue_record(3, 1000.0, 1500.0, 100.0, recoveries=1),  # left out: recovered
               queue_record(4, 1000.0, None, None, status="RUNNING"),  # left out: not done
               queue_record(5, 1000.0, 1300.0, 180.0),  # 120 s
               queue_record(7, 1000.0, 1010.0, 1.0),  # left out: not in a launch record
               queue_record(8, 1000.0, 1001.0, 0.5)]  # left out: a warm pool worker's job
    startup.record_from_queue(records, launches)
    startup.record_from_queue(records, launches)  # once per job
    assert startup.measured_startup_seconds("slurm") == 100.0
    assert b.capacity(opts).at(2).startup_seconds == 100.0
    assert b.capacity(b.options({"infra": "aws"})).at(2).startup_seconds == 360.0
    pool = b.capacity(b.options({"infra": "slurm", "workers": 2})).at(4)
    assert pool.startup_seconds < 60 and pool.first_startup_seconds == 100.0
    data = startup.startup_file().read_text()
    assert data.count('"1@1000"') == 1 and '"7@' not in data and '"8@' not in data
