"""The chaos benchmark's quick run, in CI: the production shape under worker kills, database
terminations, broker faults and bot kills loses, doubles and mis-charges nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.rabbitmq
def test_quick_chaos_run_loses_and_doubles_nothing():
    """`bench/chaos.py --quick` on both brokers: 0 lost, stuck, rendered twice, delivered twice
    and quota mismatches, every fault recovered from within 60 s."""
    for service in ("postgres", "redis", "rabbitmq"):
        require(service)
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for broker in ("redis", "rabbitmq"):
        result = results[broker]
        assert result["jobs"] > 50, result
        for key in ("lost", "stuck", "rendered_twice", "delivered_twice", "quota_mismatch"):
            assert result[key] == 0, (broker, key, result, done.stderr[-3000:])
        assert result["max_recovery_s"] <= 60, result
        assert result["faults"]["worker_kills"] >= 3 and result["faults"]["batch_kills"] >= 1, result
    assert done.returncode == 0
