"""SIGKILL at every point of an open, then a restart that trades: never a second order for
one decision, never an entry while an order of ours may still land, and state that agrees
with the venue; SIGTERM during retries: exit 0, no traceback, the intents it leaves
unknown named and resolved by the next start.

The real `scalpdesk --headless` runs in a subprocess against the loopback Bybit fake.
To make it open on cue, the fake's klines draw a stretched market for BTCUSDT (cue up: a
steady fall the default RuleDecider fades with a long at its first cycle, 5 s after start; down: a short;
nothing under tests/ is swapped into the engine). The fake's gates and faults hold a
request at a chosen point (received, accepted past the signature check, answered; or
held before the matching engine for N seconds, landing late) while the test kills the
process. The restart runs in AUTO mode, with the market pointing the same way or the
other way, so an in-flight order forgotten by the restart shows up as a second open, or
as an opposite one. The scenarios run in parallel, each with its own fake and state.

Figures (printed with -s): rounds, opens, duplicates (an open landing onto a position of
the same side), opposite opens (an open landing onto a position of the other side),
orders unknown to state (a venue order whose intent is missing or does not record it,
an intent left in flight, metadata that disagrees with the venue's position).

KILL_ROUNDS=N (opt-in, not in CI) runs N more rounds of randomly chosen scenarios and
sides, a few at a time, and prints the same figures.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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
SYMBOL = "BTCUSDT"

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

    def finish(self, timeout: float = 40) -> int:
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
class Run:
    srv: BybitFakeServer
    state: Path
    env: dict[str, str]
    a: Proc | None = None
    b: Proc | None = None
    b_started: float = 0.0  # wall clock when the restart started: intents before it are A's


@dataclass
class Scenario:
    name: str
    arm: Callable[[Run], Callable[[], None]]  # sets the trap; returns "wait, then kill A"
    a_side: int = 1  # the market A sees: +1 up (opens a long), -1 down (a short)
    b_side: int | None = None  # the market the restart sees (None: the same)
    b_mode: str = "auto"
    b_run: float = 8.0  # the restart's --run-for (its first cycle comes 5 s after start)
    env: dict[str, str] = field(default_factory=dict)
    after_kill: Callable[[Run], None] = lambda run: run.srv.exchange.release_all()
    during_b: Callable[[Run, Proc], None] | None = None
    a_lands: bool | None = None  # does A's order end up on the venue (None: either is fine)
    b_blocks: bool = False  # the restart must block its entry with ORDER_IN_FLIGHT
    start_delay: float = 0.0  # start after the others' processes started (timing-exact replays)


def gate_then_kill(path: str, phase: str, then: str = "process", after: float = 0.0) -> Callable[[Run], Callable[[], None]]:
    def arm(run: Run) -> Callable[[], None]:
        gate = run.srv.exchange.gate(path, phase, then)

        def fire() -> None:
            assert gate.reached.wait(25), f"{path} never {phase}"
            time.sleep(after)
            run.a.kill()  # type: ignore[union-attr]
        return fire
    return arm


def kill_after_answer(delay: float) -> Callable[[Run], Callable[[], None]]:
    """Kill `delay` s after the create's answer was written (races the state writes)."""
    def arm(run: Run) -> Callable[[], None]:
        answered = threading.Event()

        def observe(phase: str, path: str, params: dict) -> None:
            if phase == "answered" and path == CREATE and not answered.is_set():
                time.sleep(delay)
                run.a.kill()  # type: ignore[union-attr]
                answered.set()
        run.srv.exchange.observers.append(observe)

        def fire() -> None:
            assert answered.wait(25), "the create was never answered"
        return fire
    return arm


def kill_on_stdout(text: str, *, and_drop_create: bool = False) -> Callable[[Run], Callable[[], None]]:
    def arm(run: Run) -> Callable[[], None]:
        if and_drop_create:  # if the request left before the kill, it never lands either
            run.srv.exchange.gate(CREATE, "received", "drop")

        def fire() -> None:
            wait_until(lambda: run.a.saw(text), 25, text)  # type: ignore[union-attr]
            run.a.kill()  # type: ignore[union-attr]
        return fire
    return arm


def hold_then_kill(hold_sec: float, kill_after: float) -> Callable[[Run], Callable[[], None]]:
    """The exchange holds A's create `hold_sec` before its matching engine (it lands
    then, whatever happened to A); A is killed `kill_after` s after the request arrived."""
    def arm(run: Run) -> Callable[[], None]:
        run.srv.exchange.fail(CREATE, "hold", seconds=hold_sec)
        arrived = threading.Event()

        def observe(phase: str, path: str, params: dict) -> None:
            if phase == "received" and path == CREATE:
                arrived.set()
        run.srv.exchange.observers.append(observe)

        def fire() -> None:
            assert arrived.wait(25), "the create never reached Bybit"
            time.sleep(kill_after)
            run.a.kill()  # type: ignore[union-attr]
        return fire
    return arm


def land_after_restart_reconciled(run: Run, b: Proc) -> None:
    # The held create lands only once the restarted process has reconciled: in flight
    # then, or past its deadline (FAILED), its fill must end up recorded against it.
    wait_until(lambda: b.saw('"code":"STATE"'), 20, "the restart to reconcile")
    run.srv.exchange.release_all()
    wait_until(lambda: b.saw('"code":"RECONCILED"') or b.saw('"code":"ADOPTED"'), 10, "the late fill to be found")


def land_once_the_restart_blocked(run: Run, b: Proc) -> None:
    # The held create lands once the restart has refused its own entry for it (inside the
    # 20 s recv_window): issue 9's sequence 1 without betting on how fast a restart is.
    wait_until(lambda: b.saw("ORDER_IN_FLIGHT"), 25, "the restart to block its entry")
    run.srv.exchange.release_all()


WINDOW_20S = {"SCALPDESK_BYBIT_RECV_WINDOW_MS": "20000"}

SCENARIOS = [
    Scenario("before the intent write (market snapshot)", gate_then_kill("/v5/market/kline", "received", "drop"),
             a_lands=False),
    Scenario("after the intent write (PENDING, leverage)", gate_then_kill("/v5/position/set-leverage", "received", "drop"),
             a_lands=False),
    Scenario("between the durable write and the send", kill_on_stdout('"code":"ORDER"', and_drop_create=True),
             a_lands=False),
    Scenario("request left, never landed", gate_then_kill(CREATE, "received", "drop"), a_lands=False, a_side=-1),
    Scenario("just after the send: landed after the kill", gate_then_kill(CREATE, "accepted"), a_lands=True),
    Scenario("just after the send, short: landed after the kill", gate_then_kill(CREATE, "accepted"), a_lands=True,
             a_side=-1),
    Scenario("request left, landed after the restart reconciled", gate_then_kill(CREATE, "accepted"),
             after_kill=lambda run: None, during_b=land_after_restart_reconciled, a_lands=True, b_mode="approve",
             b_run=8.0),
    # Issue 9, sequence 1, replayed: killed 0.3 s after the open was sent, the exchange
    # holding it inside a 20 s recv_window until the restart has decided; the restart wants
    # the same side (a second long) or the other side (a long netting the late short).
    Scenario("held past the restart's entry, same side (sequence 1)", gate_then_kill(CREATE, "accepted", after=0.3),
             env=WINDOW_20S, after_kill=lambda run: None, during_b=land_once_the_restart_blocked, a_lands=True,
             b_run=16.0, b_blocks=True),
    Scenario("held past the restart's entry, short, restart wants a long (sequence 1)",
             gate_then_kill(CREATE, "accepted", after=0.3), env=WINDOW_20S, a_side=-1, b_side=1,
             after_kill=lambda run: None, during_b=land_once_the_restart_blocked, a_lands=True, b_run=16.0,
             b_blocks=True),
    Scenario("held 4 s, long, restart wants a short", hold_then_kill(4.0, 0.1), env={"SCALPDESK_BYBIT_RECV_WINDOW_MS": "5000"},
             a_side=1, b_side=-1, a_lands=True, b_run=9.0),
    Scenario("after the answer (held)", gate_then_kill(CREATE, "answered"), a_lands=True),
    Scenario("after the answer +0 ms", kill_after_answer(0.0), a_lands=True),
    Scenario("after the answer +10 ms, short", kill_after_answer(0.010), a_lands=True, a_side=-1, b_side=1),
    Scenario("after the answer, confirming the fill", gate_then_kill("/v5/order/realtime", "received"), a_lands=True),
    Scenario("after the position was written", kill_on_stdout('"code":"OPENED"'), a_lands=True),
]


def _env(srv: BybitFakeServer, state: Path, mode: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALPDESK_", "BYBIT_"))}
    env.update(
        PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(state.parent / "config"),
        SCALPDESK_VENUE="testnet", SCALPDESK_MODE=mode, SCALPDESK_SYMBOLS=SYMBOL,
        SCALPDESK_STATE_DIR=str(state), SCALPDESK_DECISION_INTERVAL_SEC="5", SCALPDESK_MONITOR_INTERVAL_SEC="1",
        BYBIT_BASE_URL=srv.url, BYBIT_API_KEY=FAKE_KEY, BYBIT_API_SECRET=FAKE_SECRET,
        SCALPDESK_BYBIT_TIMEOUT_SEC="2", SCALPDESK_BYBIT_RECV_WINDOW_MS="1000",
    )
    env.update(extra)
    return env


def run_scenario(sc: Scenario, base: Path) -> Counter:
    state = base / "state"
    time.sleep(sc.start_delay)
    with BybitFakeServer() as srv:
        ex = srv.exchange
        ex.trend[SYMBOL] = sc.a_side
        run = Run(srv, state, _env(srv, state, "auto", sc.env))
        try:
            fire = sc.arm(run)
            run.a = Proc(run.env, "--run-for", "40")
            fire()
            run.a.kill()
            ex.trend[SYMBOL] = sc.b_side if sc.b_side is not None else sc.a_side
            sc.after_kill(run)
            run.b_started = time.time()
            run.b = Proc(_env(srv, state, sc.b_mode, sc.env), "--run-for", str(sc.b_run))
            if sc.during_b:
                sc.during_b(run, run.b)
            rc = run.b.finish()
            assert rc == 0, run.b.text()[-2000:]
            ex.release_all()
            return check(sc, run)
        finally:
            for p in (run.a, run.b):
                if p is not None and p.p.poll() is None:
                    p.kill()
            ex.release_all()


def tally(run: Run) -> Counter:
    """The figures of one round, from the venue's order log and the state left behind."""
    ex = run.srv.exchange
    figures: Counter = Counter(rounds=1)
    side, size = "", 0.0
    with ex.lock:
        orders = [dict(o) for o in ex.orders if o["symbol"] == SYMBOL]
    for o in orders:  # replay the position through every order, ours and the venue's
        qty = float(o["cumExecQty"])
        if not o["reduceOnly"] and o["createType"] == "CreateByUser":
            figures["opens"] += 1
            if size > 0 and side == o["side"]:
                figures["duplicates"] += 1
            elif size > 0:
                figures["opposite opens"] += 1
        if size > 0 and side != o["side"]:
            closed = min(qty, size)
            size, qty = round(size - closed, 10), round(qty - closed, 10)
        if qty > 0 and not o["reduceOnly"]:
            side, size = o["side"], round(size + qty, 10)
    with StateStore(run.state) as store:
        intents = {i.intent_id: i for i in store.intents()}
        metas = {m.symbol: m for m in store.positions()}
    for o in orders:
        if o["createType"] != "CreateByUser":
            continue
        intent = intents.get(o["orderLinkId"])
        if intent is None or intent.status is not IntentStatus.EXECUTED or intent.order_id != o["orderId"]:
            figures["orders unknown to state"] += 1
    figures["orders unknown to state"] += sum(i.status in (IntentStatus.PENDING, IntentStatus.EXECUTING)
                                              for i in intents.values())
    venue = {p.symbol: p for p in ex.open_positions()}
    for sym in set(venue) | set(metas):
        p, m = venue.get(sym), metas.get(sym)
        want = "long" if p is not None and p.side == "Buy" else "short"
        if p is None or m is None or m.side != want or abs(m.qty - p.size) > 1e-9:
            figures["orders unknown to state"] += 1
    return figures


def check(sc: Scenario, run: Run) -> Counter:
    ex = run.srv.exchange
    assert all(ok for _, ok, _ in check_state_dir(run.state)), check_state_dir(run.state)
    figures = tally(run)
    assert figures["duplicates"] == figures["opposite opens"] == figures["orders unknown to state"] == 0, (
        figures, ex.orders_for(SYMBOL), run.b.text()[-3000:])  # type: ignore[union-attr]
    with StateStore(run.state) as store:
        a_intents = [i for i in store.intents() if i.created_at < run.b_started]
    links = {o["orderLinkId"] for o in ex.orders_for(SYMBOL)}
    a_landed = any(i.intent_id in links and i.kind == "OPEN" for i in a_intents)
    if sc.a_lands is not None:
        assert a_landed == sc.a_lands, (a_intents, ex.orders_for(SYMBOL))
    if sc.b_blocks:
        assert run.b.saw("ORDER_IN_FLIGHT"), run.b.text()[-3000:]  # type: ignore[union-attr]
    everything = run.a.text() + run.b.text() + state_text(run.state)  # type: ignore[union-attr]
    assert leaks(everything) == []
    return figures


def run_all(scenarios: list[Scenario], base: Path, workers: int) -> tuple[Counter, dict[str, str]]:
    total: Counter = Counter()
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {f"{i}: {sc.name}": pool.submit(run_scenario, sc, base / f"s{i}") for i, sc in enumerate(scenarios)}
        for name, fut in futures.items():
            try:
                total += fut.result(timeout=180)
            except Exception as e:  # noqa: BLE001 - report every scenario
                errors[name] = f"{type(e).__name__}: {e}"[:3000]
    return total, errors


def figures_line(total: Counter) -> str:
    keys = ("rounds", "opens", "duplicates", "opposite opens", "orders unknown to state")
    return "kill rounds: " + ", ".join(f"{k} {total.get(k, 0)}" for k in keys)


def test_sigkill_at_every_point_of_an_open_then_a_trading_restart(tmp_path):
    total, errors = run_all(SCENARIOS, tmp_path, workers=len(SCENARIOS))
    print("\n" + figures_line(total))
    assert errors == {}, errors
    assert total["rounds"] == len(SCENARIOS) and total["opens"] >= len(SCENARIOS) - 3


@pytest.mark.skipif(not os.environ.get("KILL_ROUNDS"), reason="opt-in: KILL_ROUNDS=N for N randomised rounds")
def test_kill_loop_many_rounds(tmp_path):
    rounds = int(os.environ["KILL_ROUNDS"])
    rng = random.Random(int(os.environ.get("KILL_SEED", "9")))
    picks = []
    for _ in range(rounds):
        sc = rng.choice(SCENARIOS)
        a = rng.choice((1, -1))
        b = rng.choice((1, -1))
        # (no timing-exact assertion here: under load the restart may come after the landing)
        picks.append(replace(sc, a_side=a, b_side=b, b_blocks=False, start_delay=0.0))
    total, errors = run_all(picks, tmp_path, workers=int(os.environ.get("KILL_WORKERS", "6")))
    print("\n" + figures_line(total))
    assert errors == {}, errors


# --- SIGTERM: a clean stop ------------------------------------------------------------------


@pytest.mark.parametrize("fault, left_unknown", [
    (dict(kind="retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=300), False),
    (dict(kind="http", status=503), True),
])
def test_sigterm_during_an_opens_retries_exits_0_and_says_what_it_left(tmp_path, fault, left_unknown):
    state = tmp_path / "state"
    with BybitFakeServer() as srv:
        ex = srv.exchange
        ex.trend[SYMBOL] = 1
        env = _env(srv, state, "auto", {"SCALPDESK_VENUE_RETRY_GIVEUP_SEC": "60"})
        ex.fail(CREATE, times=100_000, **fault)
        a = Proc(env, "--run-for", "40")
        try:
            wait_until(lambda: srv.count(CREATE) >= 2, 25, "the open's retries")
            stopped = time.monotonic()
            a.p.send_signal(signal.SIGTERM)
            rc = a.finish(20)
            took = time.monotonic() - stopped
            assert rc == 0 and "Traceback" not in "".join(a.err), a.text()[-3000:]
            assert took < 6.0, took
            assert a.saw('"code":"STOP"') and a.saw("SIGTERM: stopping")
            with StateStore(state) as store:
                [intent] = store.intents()
            if left_unknown:
                assert intent.status is IntentStatus.EXECUTING  # left on purpose, and said
                assert any(intent.intent_id in line and '"code":"LEFT_UNKNOWN"' in line for line in a.out)
            else:
                assert intent.status is IntentStatus.FAILED and "not placed" in intent.reason
                assert not a.saw('"code":"LEFT_UNKNOWN"')
            ex.faults.clear()
            b = Proc(_env(srv, state, "approve", {}), "--run-for", "4")
            assert b.finish() == 0
            with StateStore(state) as store:
                assert store.get_intent(intent.intent_id).status is IntentStatus.FAILED  # resolved by the next start
            assert ex.orders_for() == []
        finally:
            for p in (a,):
                if p.p.poll() is None:
                    p.kill()
