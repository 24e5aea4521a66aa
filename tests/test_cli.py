"""The `scalpdesk` command as a person runs it: headless JSON lines, the lock, state check,
invalid settings."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALPDESK_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_headless_logs_json_lines_and_stops_cleanly(tmp_path):
    p = run(["--headless", "--run-for", "2", "--state-dir", str(tmp_path / "s"), "--mode", "auto"])
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    codes = [e["code"] for e in events]
    assert codes[0] == "START" and codes[-1] == "STOP"
    assert any(e["kind"] == "state" and e["mode"] == "auto" and e["venue"] == "sim" for e in events)
    assert (tmp_path / "s" / "scalpdesk.lock").exists()


def test_a_second_scalpdesk_on_the_same_state_refuses(tmp_path):
    env = {"PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "app.cli", "--headless", "--run-for", "20", "--state-dir", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **env})
    try:
        for _ in range(100):  # wait for the first to hold the lock
            if first.stdout.readline():
                break
            time.sleep(0.05)
        second = run(["--headless", "--run-for", "1", "--state-dir", str(tmp_path)])
        assert second.returncode == 2
        assert f"state directory {tmp_path} is in use by another scalpdesk (pid {first.pid})" in second.stderr
    finally:
        first.terminate()
        first.wait(10)
    assert first.returncode == 0


def test_state_check(tmp_path):
    assert run(["--headless", "--run-for", "0.5", "--state-dir", str(tmp_path)]).returncode == 0
    ok = run(["state", "check", "--state-dir", str(tmp_path)])
    assert ok.returncode == 0 and "ok   " in ok.stdout and "state.json" in ok.stdout
    (tmp_path / "state.json").write_text("{ torn")
    bad = run(["state", "check", "--state-dir", str(tmp_path)])
    assert bad.returncode == 1 and "BAD  " in bad.stdout and "not valid JSON" in bad.stdout
    start = run(["--headless", "--run-for", "0.5", "--state-dir", str(tmp_path)])
    assert start.returncode == 2 and "state.json" in start.stderr and "left untouched" in start.stderr
    assert (tmp_path / "state.json").read_text() == "{ torn"


def test_invalid_setting_stops_the_start_with_one_line(tmp_path):
    p = run(["--headless", "--state-dir", str(tmp_path)], {"SCALPDESK_DECISION_INTERVAL_SEC": "0"})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "scalpdesk: invalid setting SCALPDESK_DECISION_INTERVAL_SEC='0': Input should be greater than or equal to 5 (allowed 5–3600)"
    ]
    assert not (tmp_path / "state.json").exists()


def test_live_needs_the_live_flag(tmp_path):
    p = run(["--headless", "--venue", "live", "--state-dir", str(tmp_path)])
    assert p.returncode == 2 and "--live" in p.stderr
