"""A console attached to the engine over its socket (issue: the engine as a service).

The engine runs in this process, as `scalpdesk --headless` runs it (the engine and its
socket service), with 100 open positions whose marks tick and a decision cycle every 5 s
over 10 symbols. The console is `scalpdesk` itself, started on a pty of 160x48: it finds
the engine's socket and attaches.

1. Event from the engine to the console's screen, over the socket: a log line emitted in
   the engine until its text has been written to the console's terminal, p50/p99. Beside
   it, in the same run, the socket leg alone: the same line until a bare EngineClient in
   this process has read it (what the wire and the JSON cost; the rest is the console).
2. Start to first frame of an attaching console (the status bar and the footer drawn),
   and to the full picture (the 100 positions replayed and on screen), against a bare
   Textual app that shows one ticking clock; medians of several starts, alternated.

    python bench/bench_attach.py [--samples 200] [--starts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_console import Term, loaded_engine, me  # noqa: E402
from engine.protocol import SOCKET_FILE  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class EngineThread:
    """The loaded engine and its socket service on an event loop of their own."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(120):
            raise SystemExit("the engine did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from engine.service import EngineService

        self.engine = loaded_engine(self.state_dir)
        self.service = EngineService(self.engine, self.state_dir / SOCKET_FILE)
        self.stopping = asyncio.Event()
        await self.engine.start()
        await self.service.start()
        self.ready.set()
        await self.stopping.wait()
        await self.service.stop()
        await self.engine.stop()
        self.engine.store.close()

    def log(self, text: str, level: str = "info") -> float:
        """Emit a log line from the engine's loop; the monotonic time it left."""
        sent: list[float] = []
        done = threading.Event()

        def emit() -> None:
            sent.append(time.monotonic())
            self.engine.log_line(level, text, "BENCH")
            done.set()

        self.loop.call_soon_threadsafe(emit)
        done.wait(10)
        return sent[0]

    def stop(self) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join(60)


class SocketReader:
    """A bare client of the engine's socket: when did each marker arrive?"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()
        if not self.ready.wait(60):
            raise SystemExit("the bare client did not attach")

    async def _run(self) -> None:
        from app.client import EngineClient, EngineGone
        from engine.events import LogEvent

        client = EngineClient(self.path, role="status")
        await client.connect()
        try:
            async for msg in client.messages():
                if msg.type == "replayed":
                    self.ready.set()
                    continue
                event = getattr(msg, "event", None)
                if isinstance(event, LogEvent) and event.message.startswith("PING"):
                    self.seen[event.message.split()[0]] = time.monotonic()
        except EngineGone:  # the bench is over
            pass

    def wait(self, marker: str, timeout: float = 10) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.seen:
                return self.seen[marker]
            time.sleep(0.0005)
        return None


def console_cmd(state: Path) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, "-m", "app.cli", "--state-dir", str(state)], {"XDG_CONFIG_HOME": str(state / "no-config")}


def latency(engine: EngineThread, console: Term, reader: SocketReader, samples: int,
            level: str) -> dict[str, list[float]]:
    screen, wire = [], []
    for i in range(samples):
        marker = f"PING{level[0]}{i:05d}"
        t0 = engine.log(f"{marker} over the socket", level)
        seen = console.expect(marker.encode(), 10)
        got = reader.wait(marker)
        if seen is not None:
            screen.append((seen - t0) * 1000)
        if got is not None:
            wire.append((got - t0) * 1000)
        # off the monitor's and the marks' beat; errors are toasts, which pile up
        time.sleep((0.05 if level == "info" else 0.4) + (i % 7) * 0.013)
    return {"screen": screen, "wire": wire}


def starts(engine_state: Path, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"frame": [], "picture": [], "bare": []}
    args, env = console_cmd(engine_state)
    for _ in range(n):
        term = Term(args, env)
        frame = term.expect(b"Quit", 60, since_now=False)
        status = term.expect(b"UTC", 10, since_now=False)
        full = term.expect(b"Positions (100)", 30, since_now=False)
        if frame is None or status is None or full is None:
            raise SystemExit(f"the console did not draw:\n{term.text()[-3000:]}")
        out["frame"].append(max(frame, status) - term.t0)
        out["picture"].append(full - term.t0)
        term.stop()
        bare = Term(me("--child", "bare"))
        seen = bare.expect(b"UTC", 30, since_now=False)
        if seen is None:
            raise SystemExit("the bare app did not draw")
        out["bare"].append(seen - bare.t0)
        bare.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        engine = EngineThread(state)
        try:
            reader = SocketReader(state / SOCKET_FILE)
            cmd, env = console_cmd(state)
            console = Term(cmd, env)
            if console.expect(b"Positions (100)", 120, since_now=False) is None:
                raise SystemExit(f"the console did not attach:\n{console.text()[-3000:]}")
            time.sleep(3)
            lat = {f"{key}-{level}": xs for level in ("info", "error")
                   for key, xs in latency(engine, console, reader, args.samples, level).items()}
            console.stop()
            st = starts(state, args.starts)
        finally:
            engine.stop()
        load = os.getloadavg()
        print(f"bench_attach · load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} · {os.cpu_count()} cores · "
              f"100 positions ticking, a cycle every 5 s over 10 symbols")
        print()
        print("| figure | p50 | p99 | samples |")
        print("|---|---|---|---|")
        for name, key in (("engine error → console toast on screen, over the socket", "screen-error"),
                          ("engine log line → console's log panel (written on its 0.5 s tick)", "screen-info"),
                          ("engine event → bare socket client (the wire alone)", "wire-info")):
            xs = lat[key]
            print(f"| {name} | {pct(xs, 0.5):.2f} ms | {pct(xs, 0.99):.2f} ms | {len(xs)}/{args.samples} |")
        print()
        frame, picture, bare = (statistics.median(st[k]) * 1000 for k in ("frame", "picture", "bare"))
        print("| start (median of %d) | ms | × bare |" % args.starts)
        print("|---|---|---|")
        print(f"| bare Textual app, first frame | {bare:.0f} | 1.00 |")
        print(f"| attaching console, first frame | {frame:.0f} | {frame / bare:.2f} |")
        print(f"| attaching console, 100 positions on screen | {picture:.0f} | {picture / bare:.2f} |")


if __name__ == "__main__":
    main()
