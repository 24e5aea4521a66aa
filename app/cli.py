"""The `scalpdesk` command: the console (default), --headless, and `state check`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from engine.config import SettingsError, load_settings


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scalpdesk",
        description="Terminal console for AI-assisted scalping of Bybit USDT perpetuals. "
        "Subcommands: `scalpdesk status`, `scalpdesk stop`, `scalpdesk replay`, `scalpdesk report`, "
        "`scalpdesk klines`, `scalpdesk state check`, `scalpdesk doctor` (each with --help).",
    )
    p.add_argument("--config", type=Path, help="TOML settings file (default ~/.config/scalpdesk/config.toml)")
    p.add_argument("--venue", choices=["sim", "paper", "testnet", "demo", "live"])
    p.add_argument("--live", action="store_true", help="required to trade on the live venue")
    p.add_argument("--mode", choices=["approve", "auto"])
    p.add_argument("--decider", choices=["rules", "openai"])
    p.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--decision-interval", type=int, dest="decision_interval_sec", metavar="SEC")
    p.add_argument("--monitor-interval", type=int, dest="monitor_interval_sec", metavar="SEC")
    p.add_argument("--seed", type=int, dest="sim_seed", help="seed of the simulated market")
    p.add_argument("--speed", type=float, dest="sim_speed", help="simulated market speed factor (demos)")
    p.add_argument("--headless", action="store_true", help="run the engine without the console; JSON lines on stdout")
    p.add_argument("--verbose", action="store_true", help="headless: include debug events")
    p.add_argument("--run-for", type=float, metavar="SEC", help="headless: stop after SEC seconds")
    return p


def _state_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scalpdesk state", description="Inspect the state files.")
    sub = p.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="say whether the state files are sound")
    check.add_argument("--config", type=Path)
    check.add_argument("--state-dir", type=Path)
    args = p.parse_args(argv)
    try:
        settings = load_settings(args.config, state_dir=args.state_dir)
    except SettingsError as e:
        print(e, file=sys.stderr)
        return 2
    from engine.store import check_state_dir

    results = check_state_dir(settings.state_dir)
    if not results:
        print(f"{settings.state_dir}: no state files yet")
        return 0
    bad = 0
    for name, ok, message in results:
        print(f"{'ok  ' if ok else 'BAD '} {name}: {message}")
        bad += not ok
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["state"]:
        return _state_main(argv[1:])
    if argv[:1] == ["doctor"]:
        from app.doctor import main as doctor_main

        return doctor_main(argv[1:])
    if argv[:1] == ["report"]:
        from app.report_cmd import run as report_main

        return report_main(argv[1:])
    if argv[:1] == ["klines"]:
        from app.klines_cmd import run as klines_main

        return klines_main(argv[1:])
    if argv[:1] in (["status"], ["stop"]):
        from app.engine_cmd import run as engine_main

        return engine_main(argv[1:], stop=argv[0] == "stop")
    if argv[:1] == ["replay"]:
        from app.replay_cmd import run as replay_main

        return replay_main(argv[1:])
    args = _run_parser().parse_args(argv)
    overrides = {
        k: getattr(args, k)
        for k in ("venue", "mode", "decider", "state_dir", "decision_interval_sec", "monitor_interval_sec", "sim_seed", "sim_speed")
    }
    if args.symbols is not None:
        overrides["symbols"] = args.symbols
    if args.live:
        overrides["venue"] = "live"
    try:
        settings = load_settings(args.config, **overrides)
        if settings.venue == "live" and not args.live:
            raise SettingsError("the live venue trades real money: add --live to the command line to confirm")
        if args.headless:
            from app.headless import run_headless

            return asyncio.run(run_headless(settings, verbose=args.verbose, run_for=args.run_for))
        from app.console import run_console

        return run_console(settings, argv)
    except SettingsError as e:
        print(f"scalpdesk: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # engine.store is imported only when it is used (not by a console's start).
        from engine.store import StoreError

        if isinstance(e, StoreError):
            print(f"scalpdesk: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
