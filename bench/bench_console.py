"""What the console costs, measured in real terminals (ptys of 160x48), beside a bare
Textual app that shows one ticking clock, in the same run. The console is a client of
an engine process (app.client, engine.service): the loaded engine runs in a process of
its own and serves its socket; the figures are the console's own process.

1. CPU over the run (default 60 s) with 100 open positions ticking, 10 log lines a
   second and a decision cycle every 5 s over 10 symbols (the market watch's rows,
   sparklines and latest decisions change with every cycle); as a ratio to the bare app and as a percent
   of one core. The same load without the console (the engine alone) is measured
   after it, so the console's own share shows. Bytes written to the terminal per
   second are counted too (that is what goes over SSH). A probe inside both processes
   (bench/probe: it wraps Textual's screen update) tells how much of that CPU is Textual
   and Rich repainting the screen, how many repaints a second, and how long each takes.
   Then the same with the journal open over the desk (the load goes on under it).
2. Time from start to the first full frame: `scalpdesk` on the simulated market
   against the bare app (median of several starts, Python start-up included), split
   by the probe at App.run: what comes before it (interpreter, imports, settings) and
   Textual's work from it to the first frame (CSS, mount, styles, layout, paint).
3. Key-to-screen time of force close's confirmation under that load: c pressed on
   the positions panel until the dialog's text has been written to the terminal; and
   of the journal (j) and the statistics (s), read from the state files, under the same load.
   The engine process's CPU over the same window is printed beside (it is not the console's).
   Start-up: `scalpdesk` attaching to an engine already running for its state directory.

    python bench/bench_console.py [--seconds 60] [--samples 100] [--starts 5]

To see where the cost goes, the load can be changed from the environment:
BENCH_POSITIONS (100), BENCH_LOG_RATE (10 lines/s), BENCH_DECISION_SEC (5),
BENCH_MONITOR_SEC (5), BENCH_SYMBOLS (10: the symbols decided on, rows of the market watch); BENCH_NO_FREEZE=1 runs the console without its GC policy
(app.console.GcPolicy); BENCH_VERBOSE=1 prints every key-to-screen sample;
BENCH_PROFILE=FILE runs the console under pyinstrument (installed apart, not a dependency)
and writes its report to FILE when the console quits.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE_DIR = REPO / "bench" / "probe"  # its sitecustomize stamps the start and times Textual's repaints
COLS, ROWS = 160, 48
POSITIONS = int(os.environ.get("BENCH_POSITIONS", 100))
LOG_LINES_PER_SEC = float(os.environ.get("BENCH_LOG_RATE", 10))
DECISION_INTERVAL_SEC = int(os.environ.get("BENCH_DECISION_SEC", 5))
MONITOR_INTERVAL_SEC = int(os.environ.get("BENCH_MONITOR_SEC", 5))
N_SYMBOLS = min(int(os.environ.get("BENCH_SYMBOLS", 10)), 12)
WATCHED = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "BNBUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT",
           "DOTUSDT", "LTCUSDT", "TRXUSDT"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the children ------------------------------------------------------------------


def bare_app() -> None:
    """The reference: a bare Textual app with one label that ticks every second."""
    from textual.app import App
    from textual.widgets import Label

    class Clock(App):
        def compose(self):
            yield Label(id="clock")

        def on_mount(self) -> None:
            self.tick()
            self.set_interval(1.0, self.tick)

        def tick(self) -> None:
            self.query_one(Label).update(time.strftime("%H:%M:%S UTC", time.gmtime()))

    Clock().run()


def loaded_engine(state_dir: Path):
    """An engine on the simulated market with 100 open positions, a decision cycle every
    5 s over 10 symbols (rule decider, APPROVE mode) and a monitor pass every 5 s."""
    from engine.clock import SystemClock
    from engine.config import load_settings
    from engine.deciders.rules import RuleDecider
    from engine.engine import Engine
    from engine.store import StateStore
    from engine.venues.paper import PaperVenue
    from positions import open_positions
    from engine.venues.simfeed import SimFeed

    clock = SystemClock()
    settings = load_settings(
        state_dir=state_dir,
        decision_interval_sec=DECISION_INTERVAL_SEC,
        monitor_interval_sec=MONITOR_INTERVAL_SEC,
        paper_equity=1_000_000.0,
        symbols=",".join(WATCHED[:N_SYMBOLS]),
    )
    extra = [f"B{i:03d}USDT" for i in range(POSITIONS)]
    feed = SimFeed([*settings.symbols, *extra], seed=settings.sim_seed, start=clock.now())
    venue = PaperVenue(feed, clock, equity=settings.paper_equity, name="sim")
    store = StateStore(state_dir)
    engine = Engine(settings, store, venue, RuleDecider(), clock)
    open_positions(engine, venue, extra, limit_sec=lambda i: 1800 + 15 * i, band=0.05, digits=2)
    return engine


def log_lines(engine, stop: threading.Event) -> None:
    """10 operator log lines a second, emitted from a worker thread as the engine's are."""
    from engine.events import LogEvent

    i = 0
    period = 1.0 / LOG_LINES_PER_SEC if LOG_LINES_PER_SEC else 1.0
    nxt = time.monotonic()
    while LOG_LINES_PER_SEC and not stop.is_set():
        i += 1
        level = "warning" if i % 10 == 0 else "info"
        engine.emit(LogEvent(ts=engine.clock.now(), level=level, code="BENCH",
                             message=f"bench line {i}: ORDER B{i % POSITIONS:03d}USDT side=buy qty=0.42 TP=101.2 SL=98.7"))
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def console_app(state_dir: Path) -> None:
    """The console, attached to the loaded engine's socket (another process)."""
    from app.console import ScalpDeskApp
    from app.serve import socket_path
    from engine.config import load_settings

    settings = load_settings(state_dir=state_dir)
    app = ScalpDeskApp(socket_path(settings), settings, freeze_gc=not os.environ.get("BENCH_NO_FREEZE"))
    profile = os.environ.get("BENCH_PROFILE")  # a file: pyinstrument's report of the console's run there
    if not profile:
        app.run()
        return
    from pyinstrument import Profiler  # pip install pyinstrument (not a dependency)

    signal.signal(signal.SIGTERM, lambda *_: app.exit())  # the bench's stop: let the report be written
    with Profiler(interval=0.001, async_mode="disabled") as prof:
        app.run()
    Path(profile).write_text(prof.output_text(unicode=True, color=False, show_all=False))
    prof.last_session.save(profile + ".pyisession")


def engine_app(state_dir: Path) -> None:
    """The loaded engine serving its socket, 10 log lines a second: what a console attaches to."""
    import asyncio

    from app.serve import socket_path
    from engine.service import EngineService

    engine = loaded_engine(state_dir)
    stop = threading.Event()
    threading.Thread(target=log_lines, args=(engine, stop), daemon=True).start()

    async def run() -> None:
        service = EngineService(engine, socket_path(engine.settings))
        await engine.start()
        await service.start()
        print("ENGINE STARTED", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await service.stop()

    try:
        asyncio.run(run())
    finally:
        stop.set()
        engine.store.close()


# --- the parent: ptys, CPU, bytes, latency ---------------------------------------------


class Term:
    """A child process on its own pty of 160x48, its output drained and timestamped."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, probe: Path | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        child_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        child_env.update({"TERM": "xterm-256color", "COLORTERM": "truecolor",
                          "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        child_env.update(env or {})
        if probe is not None:  # bench/probe/sitecustomize.py, imported at the child's start
            child_env["PYTHONPATH"] = os.pathsep.join([str(PROBE_DIR), child_env["PYTHONPATH"]])
            child_env["BENCH_PROBE"] = str(probe)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=child_env,
                                     cwd=REPO, start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.lock = threading.Lock()
        self.buffer = bytearray()
        self.total = 0
        self.waiters: list[tuple[bytes, int, threading.Event, list[float]]] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            with self.lock:
                self.buffer += chunk
                self.total += len(chunk)
                if len(self.buffer) > 4_000_000:
                    del self.buffer[:2_000_000]
                    self.waiters = [(m, max(0, s - 2_000_000), e, t) for m, s, e, t in self.waiters]
                for marker, start, event, when in self.waiters:
                    if not event.is_set() and marker in self.buffer[start:]:
                        when.append(now)
                        event.set()

    def expect(self, marker: bytes, timeout: float, since_now: bool = True) -> float | None:
        """Monotonic time at which `marker` was written (after now), or None."""
        event = threading.Event()
        when: list[float] = []
        with self.lock:
            start = max(0, len(self.buffer) - len(marker)) if since_now else 0
            if not since_now and marker in self.buffer:
                return time.monotonic()
            self.waiters.append((marker, start, event, when))
        event.wait(timeout)
        return when[0] if when else None

    def send(self, data: bytes) -> float:
        t = time.monotonic()
        os.write(self.master, data)
        return t

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def text(self) -> str:
        with self.lock:
            raw = bytes(self.buffer[-200_000:])
        return re.sub(r"\x1b\[[0-9;?<>=]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]", "", raw.decode("utf-8", "replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(120 if os.environ.get("BENCH_PROFILE") else 5)  # a profile's report takes a while
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        try:
            os.close(self.master)
        except OSError:
            pass


def me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def probed(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """What bench/probe wrote: (App.run, first frame) stamps; (end, wall ms, CPU ms) a repaint."""
    starts, repaints = [], []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, *values = line.split()
        if kind == "start":
            starts.append((float(values[0]), float(values[1])))
        elif kind == "repaint":
            repaints.append((float(values[0]), float(values[1]), float(values[2])))
    return starts, repaints


def painting(path: Path, t0: float, t1: float) -> dict[str, float]:
    """Textual's repaints that ended in [t0, t1]: their CPU as a percent of one core, how many
    a second, and their durations (wall)."""
    _, repaints = probed(path)
    window = [(wall, cpu) for end, wall, cpu in repaints if t0 <= end <= t1]
    walls = sorted(wall for wall, _ in window)
    return {
        "paint_cpu_pct": sum(cpu for _, cpu in window) / 1000 / (t1 - t0) * 100,
        "repaints_per_sec": len(window) / (t1 - t0),
        "repaint_p50_ms": statistics.median(walls) if walls else float("nan"),
        "repaint_p99_ms": pct(walls, 0.99) if walls else float("nan"),
        "repaint_max_ms": walls[-1] if walls else float("nan"),
    }


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_engine(state: Path) -> Term:
    eng = Term(me("--child", "engine", "--state", str(state)))
    if eng.expect(b"ENGINE STARTED", 120, since_now=False) is None:
        raise SystemExit(f"the engine did not start:\n{eng.text()[-3000:]}")
    return eng


def cpu_phase(seconds: float, tmp: Path) -> dict[str, float]:
    state = tmp / "console"
    eng = start_engine(state)
    console = Term(me("--child", "console", "--state", str(state)), probe=tmp / "probe-console")
    bare = Term(me("--child", "bare"), probe=tmp / "probe-bare")
    try:
        if console.expect(b"Quit", 120, since_now=False) is None:
            raise SystemExit(f"the console did not start:\n{console.text()[-3000:]}")
        if bare.expect(b"UTC", 30, since_now=False) is None:
            raise SystemExit(f"the bare app did not start:\n{bare.text()[-2000:]}")
        # All positions are in: the panel's title counts them (a row far down is never drawn).
        if console.expect(f"Positions ({POSITIONS})".encode(), 60, since_now=False) is None:
            raise SystemExit(f"the positions never showed:\n{console.text()[-3000:]}")
        if console.expect("Market ·".encode(), 60, since_now=False) is None:  # a cycle filled the market watch
            raise SystemExit("the market watch never filled")
        time.sleep(3)  # let start-up settle
        c0, b0, e0, cb0, bb0, t0 = (console.cpu_seconds(), bare.cpu_seconds(), eng.cpu_seconds(), console.total,
                                    bare.total, time.monotonic())
        rss0 = console.rss_mib()
        time.sleep(seconds)
        c1, b1, e1, cb1, bb1, t1 = (console.cpu_seconds(), bare.cpu_seconds(), eng.cpu_seconds(), console.total,
                                    bare.total, time.monotonic())
        rss1 = console.rss_mib()
        wall = t1 - t0
        out = {
            "wall": wall,
            "console_cpu_pct": (c1 - c0) / wall * 100,
            "bare_cpu_pct": (b1 - b0) / wall * 100,
            "engine_cpu_pct": (e1 - e0) / wall * 100,
            "console_bytes_per_sec": (cb1 - cb0) / wall,
            "bare_bytes_per_sec": (bb1 - bb0) / wall,
            "rss_start_mib": rss0,
            "rss_end_mib": rss1,
        }
        out.update(painting(tmp / "probe-console", t0, t1))
        out["bare_paint_cpu_pct"] = painting(tmp / "probe-bare", t0, t1)["paint_cpu_pct"]
        out.update(covered_phase(console, min(seconds, 15.0)))
        out.update(latency_phase(console))
        out.update(screen_latency(console, b"j", b"newest first", "journal"))
        out.update(screen_latency(console, b"s", b"the figures of", "statistics"))
        return out
    finally:
        console.stop()
        bare.stop()
        eng.stop()


def covered_phase(console: Term, seconds: float) -> dict[str, float]:
    """The console's CPU and output while the journal covers the desk (the load goes on under it)."""
    console.send(b"j")
    if console.expect(b"newest first", 5) is None:
        raise SystemExit("the journal did not open")
    time.sleep(1)
    c0, b0, t0 = console.cpu_seconds(), console.total, time.monotonic()
    time.sleep(seconds)
    c1, b1, t1 = console.cpu_seconds(), console.total, time.monotonic()
    console.send(b"\x1b")
    time.sleep(1)
    return {"covered_cpu_pct": (c1 - c0) / (t1 - t0) * 100, "covered_bytes_per_sec": (b1 - b0) / (t1 - t0)}


def latency_phase(console: Term, samples: int | None = None) -> dict[str, float]:
    """c on the positions panel until the confirmation's text reaches the terminal; n cancels."""
    samples = samples or ARGS.samples
    console.send(b"2")  # the positions panel
    time.sleep(0.5)
    lat: list[float] = []
    misses = 0
    for _ in range(samples):
        t = console.send(b"c")
        seen = console.expect(b"reduce-only market order", 5)
        if seen is None:
            misses += 1
        else:
            lat.append((seen - t) * 1000)
        time.sleep(0.05)
        console.send(b"n")
        time.sleep(0.5)  # the dismissal's repaint is done before the next press
    lat.sort()
    if os.environ.get("BENCH_VERBOSE"):
        print("latencies ms:", " ".join(f"{x:.0f}" for x in lat), flush=True)
    return {
        "latency_samples": len(lat),
        "latency_misses": misses,
        "latency_p50_ms": statistics.median(lat) if lat else float("nan"),
        "latency_p99_ms": pct(lat, 0.99) if lat else float("nan"),
        "latency_max_ms": lat[-1] if lat else float("nan"),
    }


def screen_latency(console: Term, key: bytes, marker: bytes, name: str, samples: int = 20) -> dict[str, float]:
    """A key that opens a screen read from the state files, until its text is on the terminal; Esc closes."""
    lat: list[float] = []
    for _ in range(samples):
        t = console.send(key)
        seen = console.expect(marker, 5)
        if seen is not None:
            lat.append((seen - t) * 1000)
        time.sleep(0.1)
        console.send(b"\x1b")
        time.sleep(0.6)
    lat.sort()
    return {f"{name}_p50_ms": statistics.median(lat) if lat else float("nan"),
            f"{name}_max_ms": lat[-1] if lat else float("nan"), f"{name}_samples": len(lat)}


def startup_phase(starts: int, tmp: Path) -> dict[str, float]:
    """Spawn to the first full frame (status bar and footer written), median of `starts`:
    `scalpdesk` on the simulated market attaching to the engine of its state directory,
    already running (started once, before), against the bare app."""
    state = tmp / "start"
    env = {"SCALPDESK_STATE_DIR": str(state), "XDG_CONFIG_HOME": str(tmp / "config")}
    engine = Term([sys.executable, "-m", "app.cli", "--headless"], env)
    try:
        if engine.expect(b'"code":"SERVE"', 60, since_now=False) is None:
            raise SystemExit(f"the engine did not start:\n{engine.text()[-3000:]}")
        console_times, bare_times = [], []
        splits: dict[str, list[tuple[float, float]]] = {"console": [], "bare": []}  # (spawn to App.run, App.run to first frame)
        for i in range(starts):
            term = Term([sys.executable, "-m", "app.cli"], env, probe=tmp / f"probe-start-console-{i}")
            seen = term.expect(b"Quit", 60, since_now=False)
            status = term.expect(b"UTC", 5, since_now=False)
            if seen is None or status is None:
                raise SystemExit(f"scalpdesk did not draw:\n{term.text()[-3000:]}")
            console_times.append(max(seen, status) - term.t0)
            term.stop()
            splits["console"] += [(run - term.t0, first - run) for run, first in probed(tmp / f"probe-start-console-{i}")[0]]
            term = Term(me("--child", "bare"), probe=tmp / f"probe-start-bare-{i}")
            seen = term.expect(b"UTC", 30, since_now=False)
            if seen is None:
                raise SystemExit("the bare app did not draw")
            bare_times.append(seen - term.t0)
            term.stop()
            splits["bare"] += [(run - term.t0, first - run) for run, first in probed(tmp / f"probe-start-bare-{i}")[0]]
    finally:
        engine.stop()
    out = {"console_start_s": statistics.median(console_times), "bare_start_s": statistics.median(bare_times)}
    for name, rows in splits.items():
        out[f"{name}_before_run_s"] = statistics.median(r[0] for r in rows) if rows else float("nan")
        out[f"{name}_run_to_frame_s"] = statistics.median(r[1] for r in rows) if rows else float("nan")
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="scalpdesk-bench-"))
    try:
        print(f"bench_console: {POSITIONS} positions ticking, {LOG_LINES_PER_SEC} log lines/s, a decision cycle "
              f"every {DECISION_INTERVAL_SEC} s over {N_SYMBOLS} symbols (market watch), monitor every "
              f"{MONITOR_INTERVAL_SEC} s; ptys of {COLS}x{ROWS}; "
              f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}", flush=True)
        if ARGS.starts:
            s = startup_phase(ARGS.starts, tmp)
            print(f"start to first full frame: scalpdesk {s['console_start_s'] * 1000:.0f} ms, bare app "
                  f"{s['bare_start_s'] * 1000:.0f} ms, ratio {s['console_start_s'] / s['bare_start_s']:.2f} "
                  f"(median of {ARGS.starts})", flush=True)
            print(f"  split (medians): spawn to App.run (interpreter, imports, settings) scalpdesk "
                  f"{s['console_before_run_s'] * 1000:.0f} ms, bare {s['bare_before_run_s'] * 1000:.0f} ms; "
                  f"App.run to the first frame (Textual's CSS, mount, styles, layout, paint) scalpdesk "
                  f"{s['console_run_to_frame_s'] * 1000:.0f} ms, bare {s['bare_run_to_frame_s'] * 1000:.0f} ms",
                  flush=True)
        r = cpu_phase(ARGS.seconds, tmp)
        ratio = r["console_cpu_pct"] / r["bare_cpu_pct"] if r["bare_cpu_pct"] else float("inf")
        print(f"CPU over {r['wall']:.0f} s: console {r['console_cpu_pct']:.1f}% of one core, bare app "
              f"{r['bare_cpu_pct']:.2f}%, ratio {ratio:.1f}", flush=True)
        print(f"  of which Textual's repaints (layout, Rich's render of what changed, the compositor, the write; "
              f"bench/probe): {r['paint_cpu_pct']:.1f}% of one core, {r['paint_cpu_pct'] / r['console_cpu_pct'] * 100:.0f}% "
              f"of the console's CPU, {r['paint_cpu_pct'] / max(r['bare_cpu_pct'], 1e-9):.1f}x the bare app's whole CPU "
              f"(its own repaints {r['bare_paint_cpu_pct']:.2f}%); {r['repaints_per_sec']:.1f} repaints a second, "
              f"p50 {r['repaint_p50_ms']:.1f} ms, p99 {r['repaint_p99_ms']:.1f} ms, max {r['repaint_max_ms']:.1f} ms",
              flush=True)
        print(f"terminal output: console {r['console_bytes_per_sec'] / 1024:.1f} KiB/s, bare app "
              f"{r['bare_bytes_per_sec'] / 1024:.2f} KiB/s; console memory {r['rss_start_mib']:.0f} -> "
              f"{r['rss_end_mib']:.0f} MiB over the run", flush=True)
        print(f"with the journal open over the desk: console {r['covered_cpu_pct']:.1f}% of one core, "
              f"{r['covered_bytes_per_sec'] / 1024:.1f} KiB/s to the terminal", flush=True)
        print(f"force close confirmation, key to screen under load: p50 {r['latency_p50_ms']:.1f} ms, "
              f"p99 {r['latency_p99_ms']:.1f} ms, max {r['latency_max_ms']:.1f} ms "
              f"({r['latency_samples']} samples, {r['latency_misses']} missed)", flush=True)
        for name, key in (("journal", "j"), ("statistics", "s")):
            print(f"{name} ({key}), key to screen under load: p50 {r[f'{name}_p50_ms']:.1f} ms, "
                  f"max {r[f'{name}_max_ms']:.1f} ms ({r[f'{name}_samples']} samples)", flush=True)
        print(f"the engine process over the same window: {r['engine_cpu_pct']:.1f}% of one core "
              "(not counted in the console's figure)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--child", choices=["bare", "console", "engine"])
    p.add_argument("--state", type=Path)
    ARGS = p.parse_args()
    sys.path.insert(0, str(REPO))
    if ARGS.child == "bare":
        bare_app()
    elif ARGS.child == "console":
        console_app(ARGS.state)
    elif ARGS.child == "engine":
        engine_app(ARGS.state)
    else:
        main()
