"""`scalpdesk status` and `scalpdesk stop`: the engine of a state directory, from outside.

    scalpdesk status            what the engine is doing: venue, mode, positions, pending, cooldowns
    scalpdesk stop [--force]    stop it (asks first while positions are open; --force does not ask)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from app.client import EngineClient, EngineGone, Refused
from app.report_cmd import OneLineParser
from app.serve import socket_path
from engine.commands import Shutdown
from engine.config import SettingsError, load_settings
from engine.events import AccountUpdated, BaseEvent, CooldownStarted, DecisionEvent, EngineState, PositionsUpdated
from engine.protocol import Hello

STOP_TIMEOUT_SEC = 60.0


def _parser(prog: str, stop: bool) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=(
        "Stop the engine of the state directory (it asks first while positions are open)." if stop
        else "Show what the engine of the state directory is doing."))
    p.add_argument("--config", type=Path, help="TOML settings file (default ~/.config/scalpdesk/config.toml)")
    p.add_argument("--state-dir", type=Path)
    if stop:
        p.add_argument("--force", action="store_true", help="do not ask, even with positions open")
    return p


async def picture(path: Path) -> tuple[Hello, list[BaseEvent], EngineClient]:
    """Attach, read the replay (the desk as it is), and keep the connection for a command."""
    client = EngineClient(path, role="status")
    hello = await client.connect()
    events: list[BaseEvent] = []
    async for msg in client.messages():
        if msg.type == "replayed":
            break
        events.append(msg.event)
    return hello, events, client


def _countdown(sec: float) -> str:
    sec = max(0, int(sec))
    h, rem = divmod(sec, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def describe(hello: Hello, events: list[BaseEvent], now: float) -> list[str]:
    state = next((e for e in events if isinstance(e, EngineState)), None)
    account = next((e for e in events if isinstance(e, AccountUpdated)), None)
    positions = next((e for e in events if isinstance(e, PositionsUpdated)), None)
    lines = [f"engine pid {hello.pid}, scalpdesk {hello.version}, state {hello.state_dir}"]
    if state is not None:
        health = f"DEGRADED: {state.degraded}" if state.degraded else ("PAUSED (exits run)" if state.paused else "running")
        lines.append(f"venue {state.venue.upper()} · mode {state.mode.upper()} · {health}")
    if account is not None:
        b = account.balance
        lines.append(f"equity {b.equity:,.2f} · available {b.available:,.2f} · today {account.realised_today:+,.2f} "
                     f"({account.trades_today} trade{'s' if account.trades_today != 1 else ''})")
    metas = {m.symbol: m for m in positions.metas} if positions else {}
    held = positions.positions if positions else []
    lines.append(f"positions: {len(held) or 'none'}")
    for p in held:
        m = metas.get(p.symbol)
        exit_in = f"time exit in {_countdown(m.seconds_left(now))}" if m else "no time limit known"
        lines.append(f"  {p.symbol} {p.side} {p.size:g} @ {p.entry_price:,.6g}, uPnL {p.unrealised_pnl:+,.2f}, {exit_in}")
    pending = [e for e in events if isinstance(e, DecisionEvent) and e.record.status == "PENDING" and e.expires_at]
    lines.append(f"pending approval: {len(pending) or 'none'}")
    for e in pending:
        d = e.record.decision
        lines.append(f"  {d.symbol} {d.action.value}, expires in {_countdown(e.expires_at - now)}")  # type: ignore[operator]
    cooldowns = [e.cooldown for e in events if isinstance(e, CooldownStarted) and e.cooldown.active(now)]
    lines.append(f"cooldowns: {len(cooldowns) or 'none'}")
    lines += [f"  {c.symbol} after {c.reason}, {_countdown(c.seconds_left(now))} left" for c in cooldowns]
    lines.append(f"consoles attached: {hello.consoles}")
    return lines


def _now(hello: Hello) -> float:
    from app.client import RemoteClock

    return RemoteClock(hello.clock).now()


def run(argv: list[str], *, stop: bool) -> int:
    prog = "scalpdesk stop" if stop else "scalpdesk status"
    try:
        args = _parser(prog, stop).parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        settings = load_settings(args.config, state_dir=args.state_dir)
    except SettingsError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    path = socket_path(settings)
    try:
        return asyncio.run(_stop(path, args.force) if stop else _status(path))
    except EngineGone as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except Refused as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2


async def _status(path: Path) -> int:
    hello, events, client = await picture(path)
    await client.close()
    print("\n".join(describe(hello, events, _now(hello))))
    return 0


async def _stop(path: Path, force: bool) -> int:
    hello, events, client = await picture(path)
    try:
        positions = next((e for e in events if isinstance(e, PositionsUpdated)), None)
        held = positions.positions if positions else []
        if held and not force:
            what = ", ".join(f"{p.symbol} {p.side}" for p in held)
            warning = (f"{len(held)} position(s) stay open on the venue with their TP/SL ({what}); their time exits "
                       "do not run while no engine runs.")
            if not sys.stdin.isatty():
                print(f"scalpdesk stop: {warning} Not stopped: add --force to stop anyway.", file=sys.stderr)
                return 2
            answer = input(f"{warning}\nStop the engine? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("not stopped")
                return 1
        reader = asyncio.create_task(_drain(client))
        result = await client.send(Shutdown())
        if not result.ok:
            print(f"scalpdesk stop: {result.message}", file=sys.stderr)
            return 1
        deadline = time.monotonic() + STOP_TIMEOUT_SEC
        while path.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        reader.cancel()
        if path.exists():
            print(f"scalpdesk stop: the engine (pid {hello.pid}) said it was stopping but is still there after "
                  f"{STOP_TIMEOUT_SEC:.0f} s", file=sys.stderr)
            return 1
        print(f"engine stopped (pid {hello.pid})")
        return 0
    finally:
        await client.close()


async def _drain(client: EngineClient) -> None:
    try:
        async for _ in client.messages():
            pass
    except EngineGone:
        pass
