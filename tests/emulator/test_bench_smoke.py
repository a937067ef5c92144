"""The benchmark and the load run, end to end on tiny sizes.

These check that the harnesses work and that what they count is right
(RPCs per outcome, one winner per race, replies matching stored state);
they assert no timing.
"""

from __future__ import annotations

import json

from bench import benchmark, load


def test_benchmark_runs_and_counts_rpcs(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    out = tmp_path / "bench.json"
    args = ["--iterations", "3", "--warmup", "3", "--race-callers", "5"]
    args += ["--race-trials", "1", "--cold-runs", "1", "--hostile-iterations", "2"]
    args += ["--emulator-host", emulator.host, "--json", str(out)]
    assert benchmark.main(args) == 0

    results = json.loads(out.read_text())
    assert set(results["latency"]) == {
        "floor_transactional",
        "floor_check_and_set",
        "floor_check_and_set_in_transaction",
        "service",
        "http",
    }
    rpcs = {name: row["rpcs"] for name, row in results["rpcs"].items()}
    assert rpcs == {
        "first activation": 3,
        "identical retry": 1,
        "ALREADY_EXISTS (other ExecutionToken)": 1,
        "PERMISSION_DENIED (wrong activation token)": 1,
        "PERMISSION_DENIED (no such Execution)": 1,
        "expired (closes it)": 3,
        "expired (already closed)": 1,
        "INVALID_ARGUMENT": 0,
    }
    assert all(row["code"] == row["expected"] for row in results["rpcs"].values())
    for layer in ("service", "http"):
        assert [t["codes"] for t in results["race"][layer]] == [
            {"OK": 1, "ALREADY_EXISTS": 4}
        ]
    assert results["cold_start"]["ratio"] > 0
    assert {row["target"] for row in results["targets"]}


def test_load_run_passes_on_a_few_executions(emulator, tmp_path):
    out = tmp_path / "load.json"
    args = ["--executions", "4", "--workers", "8", "--max-seconds", "60"]
    assert load.main([*args, "--emulator-host", emulator.host, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["check"]["violation_count"] == 0
    # 4 Executions x 3 racers x 3 copies, plus 2 retries of each winner.
    assert result["load"]["requests"] == 4 * 3 * 3 + 4 * 2
    assert result["check"]["codes"] == {"OK": 4 * 3 + 4 * 2, "ALREADY_EXISTS": 4 * 6}
