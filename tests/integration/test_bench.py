"""Smoke run of `make bench` (tiny sizes): every case but the hot-row and 720-partition ones (the
code of the uniform ones with other data or another partition count: coalescing a hot row is
tested in tests/unit/test_coalesce.py and the end-to-end test) runs and reports a figure; the
burst chart is a PNG."""

import json
import subprocess
import sys

from deploy.stack import ROOT


def test_bench_quick_run_reports_every_case(tmp_path):
    cases = "baseline,uniform1,uniform2,ingest,http,footprint,burst"
    command = [sys.executable, "-m", "tests.bench", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(
        [*command, "--cases", cases], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    for case in ("baseline (naive, 1 worker)", "uniform, 1 worker", "uniform, 2 workers"):
        assert results[case]["drained"], (case, results[case])
        assert results[case]["events_per_s"] > 0, (case, results[case])
    ingest = results["ingest, 1 process"]
    for kind in ("patch", "post100", "post1000"):
        assert ingest[kind]["requests_per_s"] > 0 and ingest[kind]["failed"] == 0, ingest
        assert ingest[kind]["ingest_cpu_us_per_request"] >= 0, ingest
    assert ingest["all_applied"] and ingest["rows"] >= ingest["patch"]["accepted"], ingest
    assert 0 < ingest["start_to_first_202_s"] < 30 and ingest["ingest_rss_mb"] > 0, ingest
    http = results["end to end over HTTP, 1 ingest + 1 worker"]
    assert http["accepted_requests_per_s"] > 0 and http["all_applied"], http
    for case in ("uniform, 1 worker", "uniform, 2 workers"):
        assert results[case]["first_row_to_final_per_s"] > 0, (case, results[case])
        # figured (a tiny run can finish between two samples: no CPU tick to see)
        assert all(
            results[case][f"{part}_cpu_us"] >= 0 for part in ("worker", "broker", "postgres")
        ), (case, results[case])
    assert results["footprint, 1 worker"]["idle_rss_mb"] > 0
    burst = results["burst, 2 workers"]
    assert burst["burst_events_per_s_produced"] > 0 and burst["series"]
    assert burst["drain_s_after_burst"] is not None, burst
    assert (tmp_path / "burst.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "× baseline" in done.stdout and "uniform, 2 workers" in done.stdout
