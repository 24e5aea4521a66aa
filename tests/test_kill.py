"""SIGKILL at every point of an open, then a restart: exactly one order on the venue or
none, and state that agrees with the venue.

The real `scalpdesk --headless` runs in a subprocess against the loopback Bybit fake.
To make it open on cue, the fake's klines draw an aligned uptrend for BTCUSDT, so the
default RuleDecider opens a long at its first cycle (5 s after start; nothing under
tests/ is swapped into the engine). The fake's gates hold a request at a chosen point
(received, accepted past the signature check, answered) while the test kills the
process; the restart runs in APPROVE mode (headless: never trades) so the only orders
on the venue are the ones the killed process sent. The scenarios run in parallel,
each with its own fake and state directory, to keep the test near 20 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from engine.models import IntentStatus
from engine.store import StateStore, check_state_dir
from tests.fakes.bybit_exchange import FAKE_KEY, FAKE_SECRET
from tests.fakes.bybit_rig import leaks, state_text
from tests.fakes.bybit_server import BybitFakeServer

ROOT = Path(__file__).resolve().parents[1]
CREATE = "/v5/order/create"

pytestmark = pytest.mark.slow


class Proc:
    """A headless scalpdesk with its output collected line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--headless", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.out))

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def finish(self, timeout: float = 30) -> int:
        rc = self.p.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Scenario:
    name: str
    expect_order: bool
    arm: Callable[["Run"], Callable[[], None]]  # sets the trap; returns "wait, then kill"
    after_kill: Callable[["Run"], None] = lambda run: run.srv.exchange.release_all()
    before_restart_done: Callable[["Run", Proc], None] | None = None


@dataclass
class Run:
    srv: BybitFakeServer
    state: Path
    env: dict[str, str]
    a: Proc | None = None
    b: Proc | None = None
    notes: list[str] = field(default_factory=list)


def gate_then_kill(path: str, phase: str, then: str = "process") -> Callable[[Run], Callable[[], None]]:
    def arm(run: Run) -> Callable[[], None]:
        gate = run.srv.exchange.gate(path, phase, then)

        def fire() -> None:
            assert gate.reached.wait(25), f"{path} never {phase}"
            run.a.kill()  # type: ignore[union-attr]
        return fire
    return arm


def kill_after_answer(delay: float) -> Callable[[Run], Callable[[], None]]:
    """Kill `delay` s after the create's answer was written (races the state writes)."""
    def arm(run: Run) -> Callable[[], None]:
        answered = threading.Event()

        def observe(phase: str, path: str, params: dict) -> None:
            if phase == "answered" and path == CREATE:
                time.sleep(delay)
                run.a.kill()  # type: ignore[union-attr]
                answered.set()
        run.srv.exchange.observers.append(observe)

        def fire() -> None:
            assert answered.wait(25), "the create was never answered"
        return fire
    return arm


def kill_on_stdout(text: str) -> Callable[[Run], Callable[[], None]]:
    def arm(run: Run) -> Callable[[], None]:
        def fire() -> None:
            wait_until(lambda: run.a.saw(text), 25, text)  # type: ignore[union-attr]
            run.a.kill()  # type: ignore[union-attr]
        return fire
    return arm


def land_after_restart_reconciled(run: Run, b: Proc) -> None:
    # The held create lands only once the restarted process has reconciled (and FAILED
    # the intent it could not find): its monitor must adopt the late fill.
    wait_until(lambda: b.saw('"code":"STATE"'), 20, "the restart to reconcile")
    assert any('"code":"ORDER_FAILED"' in line for line in b.out), "the restart did not FAIL the unknown intent"
    run.srv.exchange.release_all()
    wait_until(lambda: b.saw('"code":"ADOPTED"'), 10, "the late fill to be adopted")


SCENARIOS = [
    Scenario("before the intent write (market snapshot)", False, gate_then_kill("/v5/market/kline", "received", "drop")),
    Scenario("after the intent write (PENDING, leverage)", False,
             gate_then_kill("/v5/position/set-leverage", "received", "drop")),
    Scenario("request left, never landed", False, gate_then_kill(CREATE, "received", "drop")),
    Scenario("request left, landed after the kill", True, gate_then_kill(CREATE, "accepted")),
    Scenario("request left, landed after the restart reconciled", True, gate_then_kill(CREATE, "accepted"),
             after_kill=lambda run: None, before_restart_done=land_after_restart_reconciled),
    Scenario("after the answer (held)", True, gate_then_kill(CREATE, "answered")),
    Scenario("after the answer +0 ms", True, kill_after_answer(0.0)),
    Scenario("after the answer +10 ms", True, kill_after_answer(0.010)),
    Scenario("after the answer, confirming the fill", True, gate_then_kill("/v5/order/realtime", "received")),
    Scenario("after the position was written", True, kill_on_stdout('"code":"OPENED"')),
]


def _env(srv: BybitFakeServer, state: Path, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALPDESK_", "BYBIT_"))}
    env.update(
        PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(state.parent / "config"),
        SCALPDESK_VENUE="testnet", SCALPDESK_MODE=mode, SCALPDESK_SYMBOLS="BTCUSDT",
        SCALPDESK_STATE_DIR=str(state), SCALPDESK_DECISION_INTERVAL_SEC="5", SCALPDESK_MONITOR_INTERVAL_SEC="1",
        BYBIT_BASE_URL=srv.url, BYBIT_API_KEY=FAKE_KEY, BYBIT_API_SECRET=FAKE_SECRET,
        SCALPDESK_BYBIT_TIMEOUT_SEC="2", SCALPDESK_BYBIT_RECV_WINDOW_MS="1000",
    )
    return env


def run_scenario(sc: Scenario, base: Path) -> Run:
    state = base / "state"
    with BybitFakeServer() as srv:
        srv.exchange.trend["BTCUSDT"] = 1  # RuleDecider opens a long at its first cycle
        run = Run(srv, state, _env(srv, state, "auto"))
        try:
            fire = sc.arm(run)
            run.a = Proc(run.env, "--run-for", "40")
            fire()
            run.a.kill()
            sc.after_kill(run)
            run.b = Proc(_env(srv, state, "approve"), "--run-for", "6" if sc.before_restart_done else "3")
            if sc.before_restart_done:
                sc.before_restart_done(run, run.b)
            rc = run.b.finish()
            assert rc == 0, run.b.text()[-2000:]
            check(sc, run)
        finally:
            for p in (run.a, run.b):
                if p is not None and p.p.poll() is None:
                    p.kill()
            srv.exchange.release_all()
    return run


def check(sc: Scenario, run: Run) -> None:
    ex = run.srv.exchange
    orders = ex.orders_for("BTCUSDT")
    positions = ex.open_positions()
    assert all(ok for _, ok, _ in check_state_dir(run.state)), check_state_dir(run.state)
    with StateStore(run.state) as store:
        intents = store.intents()
        metas = store.positions()
        # killed before the intent write: none; at any later point: exactly the one
        assert len(intents) == (0 if sc.name.startswith("before the intent") else 1), intents
        assert [i for i in intents if i.status in (IntentStatus.PENDING, IntentStatus.EXECUTING)] == []
        if sc.expect_order:
            assert len(orders) == 1, orders
            [pos] = positions
            assert pos.size == float(orders[0]["qty"])
            [meta] = metas
            intent = store.get_intent(orders[0]["orderLinkId"])
            assert intent is not None and intent.status is IntentStatus.EXECUTED, intent
            assert (meta.symbol, meta.side, meta.intent_id) == ("BTCUSDT", "long", intent.intent_id)
        else:
            assert orders == [] and positions == [] and metas == []
            assert all(i.status is IntentStatus.FAILED for i in intents)
    everything = run.a.text() + run.b.text() + state_text(run.state)  # type: ignore[union-attr]
    assert leaks(everything) == []


def test_sigkill_at_every_point_of_an_open_leaves_one_order_or_none(tmp_path):
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        futures = {sc.name: pool.submit(run_scenario, sc, tmp_path / f"s{i}") for i, sc in enumerate(SCENARIOS)}
        errors = {}
        for name, fut in futures.items():
            try:
                fut.result(timeout=120)
            except Exception as e:  # noqa: BLE001 - report every scenario
                errors[name] = f"{type(e).__name__}: {e}"
    assert errors == {}, errors
    assert time.monotonic() - started < 60
