"""What ticking marks cost the engine: bench_console's engine alone (the simulated market,
100 open positions, 10 symbols, a decision cycle and a monitor pass every 5 s, 10 log
lines a second) with marks published up to 4 times a second, against the same engine
with marks_per_sec=0 (marks move with the monitor passes only), in one run.

    PYTHONPATH=. python bench/bench_marks_cpu.py [--seconds 30]

Each engine runs in a child process; its CPU (utime + stime from /proc, every thread)
is read over the same window after its start. Prints % of one core for each and the
load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure(marks_per_sec: str, seconds: float, tmp: Path) -> float:
    env = {**os.environ, "SCALPDESK_MARKS_PER_SEC": marks_per_sec, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bench_console.py"), "--child", "engine",
                             "--state", str(tmp / f"state-{marks_per_sec}")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "ENGINE STARTED" in line:
                break
        time.sleep(3.0)  # past the start's own work
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0) * 100
    finally:
        proc.terminate()
        proc.wait(10)


def main(seconds: float) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        off = measure("0", seconds, Path(tmp))
        on = measure("4", seconds, Path(tmp))
    print(f"engine alone, 100 positions, 10 symbols, {seconds:g}s each (% of one core):")
    print(f"  marks with the monitor passes only (marks_per_sec=0): {off:5.1f} %")
    print(f"  marks ticking up to 4 a second (marks_per_sec=4):     {on:5.1f} %  (+{on - off:.1f})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    main(ap.parse_args().seconds)
