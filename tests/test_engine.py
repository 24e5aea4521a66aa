"""The engine: jobs, approval queue, modes, pause, commands, reconciliation at start,
and a run on the simulated market that opens and closes trades."""

import asyncio

import pytest

from engine.commands import Approve, CloseAll, ForceClose, Pause, Reject, SetMode
from engine.deciders.rules import RuleDecider
from engine.events import DecisionEvent, EngineState
from engine.models import Action, CloseReason, Decision, Intent, IntentStatus, OrderRequest
from tests.rig import calm, long_btc, make_rig, plan


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path / "state")
    calm(r)
    yield r
    r.store.close()


def decisions(rig, status=None):
    return [e.record for e in rig.events if isinstance(e, DecisionEvent) and (status is None or e.record.status == status)]


async def test_jobs_are_armed_on_the_engine_clock_with_the_settings_intervals(tmp_path):
    rig = make_rig(tmp_path / "s", decision_interval_sec=45, monitor_interval_sec=15, cleanup_interval_sec=600)
    try:
        await rig.engine.start()
        t, now = rig.engine.timers, rig.clock.now()
        assert {j: t.due(j) for j in t.ids()} == {
            "monitor": now + 15, "decision": now + 45, "cleanup": now + 600, "day": now + 86_400,  # the clock starts at 00:00 UTC
        }
        assert rig.engine.next_cycle_at == now + 45
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_a_clock_that_runs_by_itself_fires_the_jobs_through_apscheduler(tmp_path):
    """At --speed 30 a 15 s monitor interval is half a wall second."""
    from engine.clock import ScaledClock
    from engine.timers import SchedulerTimers

    clock = ScaledClock(30)
    rig = make_rig(tmp_path / "s", clock=clock, monitor_interval_sec=15)
    try:
        assert isinstance(rig.engine.timers, SchedulerTimers)
        await rig.engine.start()
        job = rig.engine.timers._sched.get_job("monitor")
        assert job.trigger.interval.total_seconds() == 0.5 and job.max_instances == 1 and job.coalesce
        before = sum(e.kind == "positions" for e in rig.events)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if sum(e.kind == "positions" for e in rig.events) > before:
                break
        assert sum(e.kind == "positions" for e in rig.events) > before
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_approve_mode_queues_then_approval_executes(rig):
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    pending = decisions(rig, "PENDING")
    assert len(pending) == 1 and rig.venue.positions() == []
    assert rig.lines("CYCLE") == ["decision cycle (scripted): BTCUSDT OPEN_LONG"]
    did = pending[0].decision.decision_id
    assert did in rig.engine.pending
    answer = await rig.engine.handle(Approve(decision_id=did))
    assert answer.ok and answer.level == "info" and answer.message.startswith("BTCUSDT OPEN_LONG approved: ")
    assert answer.intent_id and answer.intent_id.startswith("o-")
    assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
    executed = decisions(rig, "EXECUTED")
    assert executed and executed[-1].intent_id.startswith("o-")
    assert rig.store.decisions(limit=1)[0].status == "EXECUTED"
    # a second approval of the same decision sends nothing
    again = await rig.engine.approve(did)
    assert not again.ok and again.level == "warning" and "not pending" in again.message
    assert len(rig.venue.positions()) == 1


async def test_reject_and_expiry_never_execute(rig):
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc(), long_btc(symbol="ETHUSDT"))
    await rig.engine.run_decision_cycle()
    first, second = [r.decision.decision_id for r in decisions(rig, "PENDING")]
    assert "REJECTED by operator" in (await rig.engine.handle(Reject(decision_id=first))).message
    rig.clock.advance(rig.settings.approval_timeout_sec + 1)
    answer = await rig.engine.approve(second)
    assert not answer.ok and answer.level == "warning" and answer.message.endswith("expired: cannot be approved")
    assert rig.venue.positions() == []
    assert {r.status for r in rig.store.decisions()} == {"REJECTED", "EXPIRED"}
    assert rig.engine.pending == {}


async def test_the_expiry_job_expires_pending_decisions(rig):
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    await rig.engine.expire_pending()
    assert rig.engine.pending
    rig.clock.advance(rig.settings.approval_timeout_sec)
    await rig.engine.expire_pending()
    assert rig.engine.pending == {} and decisions(rig, "EXPIRED")


async def test_approval_rechecks_the_guardrails(rig):
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    did = decisions(rig, "PENDING")[0].decision.decision_id
    rig.engine.pause(True)
    answer = await rig.engine.approve(did)
    assert not answer.ok and "BLOCKED now" in answer.message and "paused" in answer.message
    assert rig.venue.positions() == []


async def test_auto_mode_executes_and_blocks_with_reasons(rig):
    await rig.engine.start(schedule=False)
    await rig.engine.handle(SetMode(mode="auto"))
    rig.decider.push(long_btc(), long_btc(symbol="ETHUSDT", action=Action.OPEN_SHORT, confidence=0.1))
    await rig.engine.run_decision_cycle()
    assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
    blocked = decisions(rig, "BLOCKED")
    assert len(blocked) == 1 and "LOW_CONFIDENCE" in blocked[0].review.reasons
    assert "ETHUSDT OPEN_SHORT BLOCKED: confidence 0.10 under 0.5" == blocked[0].message


async def test_reverse_is_executed_as_close(rig):
    await rig.engine.start(schedule=False)
    rig.engine.set_mode("auto")
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    rig.decider.push(Decision(symbol="BTCUSDT", action=Action.REVERSE, confidence=0.9))
    await rig.engine.run_decision_cycle()
    assert rig.venue.positions() == []
    assert rig.store.trades()[0].reason is CloseReason.AI_CLOSE
    last = decisions(rig)[-1]
    assert last.status == "EXECUTED" and "CONVERTED: REVERSE_DISABLED" in last.message


async def test_pause_blocks_entries_but_not_exits(rig):
    await rig.engine.start(schedule=False)
    rig.engine.set_mode("auto")
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    await rig.engine.handle(Pause(paused=True))
    rig.decider.push(long_btc(symbol="ETHUSDT"))
    await rig.engine.run_decision_cycle()
    assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
    assert "PAUSED" in decisions(rig, "BLOCKED")[-1].review.reasons
    rig.clock.advance(1800)
    await rig.engine.run_monitor()  # the time exit still runs while paused
    assert rig.venue.positions() == [] and rig.store.trades()[0].reason is CloseReason.TIME_EXIT


async def test_force_close_and_close_all(rig):
    await rig.engine.start(schedule=False)
    for sym in ("BTCUSDT", "ETHUSDT"):
        rig.engine.executor.open(plan(rig, long_btc(symbol=sym)))
    answer = await rig.engine.handle(ForceClose(symbol="BTCUSDT"))
    assert answer.ok and "BTCUSDT FORCE CLOSE EXECUTED" in answer.message and answer.intent_id.startswith("c-")
    assert rig.store.trades()[0].reason is CloseReason.FORCE_CLOSE
    assert rig.store.get_cooldown("BTCUSDT") is not None
    await rig.engine.handle(CloseAll())
    assert rig.venue.positions() == [] and rig.engine.paused
    assert {t.symbol for t in rig.store.trades()} == {"BTCUSDT", "ETHUSDT"}
    assert isinstance(rig.events[-1], EngineState) or any(isinstance(e, EngineState) and e.paused for e in rig.events)


async def test_an_overlapping_cycle_is_not_started_twice(rig):
    await rig.engine.start(schedule=False)
    rig.decider.delay = 0.3
    await asyncio.gather(rig.engine.run_decision_cycle(), rig.engine.run_decision_cycle())
    assert rig.decider.calls == 1
    assert rig.lines("CYCLE_SKIPPED")


async def test_headless_approve_mode_proposes_but_never_executes(tmp_path):
    rig = make_rig(tmp_path / "s", headless=True)
    calm(rig)
    try:
        await rig.engine.start(schedule=False)
        rig.decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert rig.venue.positions() == [] and rig.engine.pending == {}
        assert "not executed" in decisions(rig, "PROPOSED")[0].message
    finally:
        rig.store.close()


async def test_reconciliation_at_start(tmp_path):
    """A restart finds: an EXECUTING intent whose order landed, one whose order never
    did, a position without metadata, and metadata whose position the venue closed."""
    rig = make_rig(tmp_path / "s")
    rig.engine.executor.open(plan(rig, long_btc(symbol="SOLUSDT", tp_pct=1.0)))
    now = rig.clock.now()
    landed = Intent(intent_id="o-landed", kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01, status=IntentStatus.EXECUTING,
                    created_at=now, updated_at=now, time_in_trade_limit_sec=1500, leverage=5)
    lost = landed.model_copy(update={"intent_id": "o-lost", "symbol": "ETHUSDT"})
    rig.store.put_intent(landed)
    rig.store.put_intent(lost)
    rig.venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id="o-landed"))
    rig.venue.place_order(OrderRequest(symbol="ETHUSDT", side="Sell", qty=1, order_link_id="by-hand"))
    rig.feed.inject_move("SOLUSDT", +3.0, over_sec=60)  # SOL's take profit fills while we are down
    rig.clock.advance(300)

    again = rig.reopen()
    try:
        sent = []
        real = again.venue.place_order
        again.venue.place_order = lambda o: (sent.append(o), real(o))[1]
        await again.engine.start(schedule=False)
        assert sent == []  # nothing is ever resent blindly
        assert again.store.get_intent("o-landed").status is IntentStatus.EXECUTED
        assert again.store.get_position("BTCUSDT").time_in_trade_limit_sec == 1500
        assert again.store.get_intent("o-lost").status is IntentStatus.FAILED
        eth = again.store.get_position("ETHUSDT")
        assert eth.adopted and eth.side == "short"
        assert again.store.trades()[0].symbol == "SOLUSDT" and again.store.trades()[0].reason is CloseReason.TAKE_PROFIT
    finally:
        again.store.close()
        rig.store = again.store


async def test_hours_on_the_simulated_market_open_and_close_trades(tmp_path):
    """The rule decider in AUTO mode on the seeded market, jobs driven by a ManualClock."""
    rig = make_rig(tmp_path / "s", decider=RuleDecider(), mode="auto")
    try:
        await rig.engine.start(schedule=False)
        for step in range(1, 6 * 60 * 2 + 1):  # 6 hours in 30 s steps
            rig.clock.advance(30)
            await rig.engine.run_monitor()
            if step % 2 == 0:
                await rig.engine.run_decision_cycle()
        opened = rig.lines("OPENED")
        trades = rig.store.trades(limit=1000)
        assert len(opened) >= 3 and len(trades) >= 2
        assert {t.reason for t in trades} <= {CloseReason.TAKE_PROFIT, CloseReason.STOP_LOSS, CloseReason.TRAILING_STOP,
                                              CloseReason.TIME_EXIT, CloseReason.AI_CLOSE}
        for t in trades:  # every close starts a cooldown; no reopen inside it
            later = [o for o in rig.store.intents() if o.kind == "OPEN" and o.symbol == t.symbol and t.closed_at < o.created_at]
            assert all(o.created_at >= t.closed_at + rig.settings.cooldown_min_sec for o in later)
        blocked = [r for r in rig.store.decisions(limit=100000) if r.status == "BLOCKED"]
        print(f"opened {len(opened)}, closed {len(trades)} {sorted({t.reason.value for t in trades})}, blocked {len(blocked)}")
    finally:
        rig.store.close()


async def test_a_cycles_records_are_written_together_and_audit_is_cut_per_symbol(rig):
    await rig.engine.start(schedule=False)
    calls = []
    real = rig.store.add_decisions
    rig.store.add_decisions = lambda recs, updates=(): (calls.append((len(recs), len(updates))), real(recs, updates))[1]

    async def decide(snapshot):
        from engine.deciders.base import DeciderResult

        ds = [long_btc(), long_btc(symbol="ETHUSDT", action=Action.HOLD)]
        audit = {"model": "m", "verdicts": {"BTCUSDT": "ok", "ETHUSDT": "ok", "SOLUSDT": "invalid"}}
        return DeciderResult(decisions=ds, audit=audit)

    rig.decider.decide = decide
    await rig.engine.run_decision_cycle()
    assert calls == [(2, 0)]
    stored = {r.decision.symbol: r for r in rig.store.decisions()}
    assert stored["BTCUSDT"].status == "PENDING" and stored["ETHUSDT"].status == "HOLD"
    assert stored["BTCUSDT"].audit == {"model": "m", "verdicts": {"BTCUSDT": "ok"}}
    # A newer proposal replaces the one waiting: the EXPIRED update rides in the same write.
    first = stored["BTCUSDT"].decision.decision_id
    await rig.engine.run_decision_cycle()
    assert calls == [(2, 0), (2, 1)]
    btc = [r for r in rig.store.decisions() if r.decision.symbol == "BTCUSDT"]
    assert [(r.decision.decision_id == first, r.status) for r in btc] == [(False, "PENDING"), (True, "EXPIRED")]
    # the pending record, written in the batch, is updated in place on approval
    assert (await rig.engine.approve(btc[0].decision.decision_id)).ok
    assert [r.status for r in rig.store.decisions() if r.decision.symbol == "BTCUSDT"] == ["EXECUTED", "EXPIRED"]


async def test_a_cycle_run_by_hand_does_not_move_the_next_scheduled_one(tmp_path):
    rig = make_rig(tmp_path / "s", decision_interval_sec=45)
    try:
        await rig.engine.start()
        scheduled = rig.engine.timers.due("decision")
        rig.clock.advance(10)
        await rig.engine.run_decision_cycle()
        assert rig.engine.next_cycle_at == scheduled == rig.clock.now() + 35
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_a_newer_proposal_replaces_the_one_still_waiting_for_the_same_symbol(rig):
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc(), long_btc(symbol="ETHUSDT"))
    await rig.engine.run_decision_cycle()
    first_btc = next(d for d, p in rig.engine.pending.items() if p.record.decision.symbol == "BTCUSDT")
    rig.decider.push(long_btc(confidence=0.95))
    await rig.engine.run_decision_cycle()
    symbols = sorted(p.record.decision.symbol for p in rig.engine.pending.values())
    assert symbols == ["BTCUSDT", "ETHUSDT"] and first_btc not in rig.engine.pending
    replaced = [r for r in rig.store.decisions() if r.decision.decision_id == first_btc]
    assert replaced[0].status == "EXPIRED" and "replaced by a newer decision" in replaced[0].message
    assert "not pending" in (await rig.engine.approve(first_btc)).message
