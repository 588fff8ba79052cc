"""bench/db_steps.py runs the job's real database steps and reports each one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.redis
def test_db_steps_times_every_step_of_a_job():
    """Five jobs through submit, claim, store, delivery claim and mark: every step timed (its
    own asserts check that each job was claimed, stored and claimed for delivery once)."""
    for service in ("postgres", "redis"):
        require(service)
    done = subprocess.run(
        [sys.executable, "bench/db_steps.py", "--jobs", "5"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["jobs"] == 5
    assert set(result["steps"]) == {"submit", "worker_claim", "duplicate", "worker_store", "sweep_claim", "mark"}
    for step, timing in result["steps"].items():
        assert timing["wall_p50_ms"] > 0 and timing["cpu_ms"] > 0, (step, timing)
    assert result["round_trip_ms"] > 0
