"""`scalpdesk doctor`: is the configured Bybit venue ready to trade?

One line per check (ok / warn / FAIL), exit status 1 when a check fails. It only
reads: it never switches the position mode, sets leverage or places an order, and it
never prints a key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from engine.config import Settings, SettingsError
from engine.venues.base import AuthError
from engine.venues.bybit_http import ApiKeys, BybitClient, Busy, NoAnswer, Refused

CHECKS = ("keys", "clock", "keys accepted", "account type", "position mode", "leverage", "margin", "symbols")


class Doctor:
    def __init__(self, settings: Settings, out: Callable[[str], None] = print) -> None:
        self.s = settings
        self.out = out
        self.failed = 0

    def line(self, status: str, name: str, text: str) -> None:
        self.failed += status == "FAIL"
        self.out(f"{status:<4} {name}: {text}")

    def call(self, client: BybitClient, name: str, method: str, private: bool = True, **params: Any) -> dict | None:
        """A request, or a FAIL line (and None) saying why it did not work."""
        try:
            return client.call(method, private=private, **params)
        except AuthError as e:
            self.line("FAIL", name, str(e))
        except Refused as e:
            self.line("FAIL", name, f"Bybit refused: {e}")
        except (Busy, NoAnswer) as e:
            self.line("FAIL", name, f"no usable answer from Bybit {client.endpoint}: {e}")
        return None

    def run(self) -> int:
        s = self.s
        if s.venue == "sim":
            self.out("ok   venue: sim trades the built-in simulated market; nothing on Bybit to check")
            return 0
        keys: ApiKeys | None = None
        if s.venue != "paper":
            from engine.venues.keys import load_keys

            try:
                keys = load_keys(s)
                where = f"key file {s.bybit_key_file}" if s.bybit_key_file and not s.bybit_api_key else "the environment"
                self.line("ok", "keys", f"found in {where}")
            except SettingsError as e:
                self.line("FAIL", "keys", str(e))
        client = BybitClient(
            "live" if s.venue == "paper" else s.venue, keys, base_url=s.bybit_base_url,
            timeout_sec=s.bybit_timeout_sec, recv_window_ms=s.bybit_recv_window_ms,
        )
        self.out(f"     venue {s.venue.upper()} at {client.endpoint}")
        self.clock(client)
        inst = self.symbols(client)
        if keys is None:
            return 1 if self.failed else 0
        if self.keys_accepted(client):
            self.account(client)
            self.positions(client, inst)
            self.margin(client)
        return 1 if self.failed else 0

    def clock(self, client: BybitClient) -> None:
        try:
            offset = client.sync_time()
        except (Refused, Busy, NoAnswer) as e:
            self.line("FAIL", "clock", f"/v5/market/time failed: {e}")
            return
        ahead = -offset  # our clock minus Bybit's
        window = f"Bybit accepts timestamps from {client.recv_window_ms} ms behind to 1000 ms ahead"
        if ahead >= 1000 or -ahead >= client.recv_window_ms:
            self.line("FAIL", "clock", f"local clock {ahead:+d} ms off Bybit's; {window}. scalpdesk resyncs on "
                      "error 10002, but fix the system clock (NTP)")
        elif abs(ahead) > 500:
            self.line("warn", "clock", f"local clock {ahead:+d} ms off Bybit's ({window})")
        else:
            self.line("ok", "clock", f"local clock {ahead:+d} ms off Bybit's")

    def symbols(self, client: BybitClient) -> dict[str, dict]:
        found: dict[str, dict] = {}
        bad = []
        for sym in self.s.symbols:
            r = self.call(client, "symbols", "get_instruments_info", private=False, category="linear", symbol=sym)
            if r is None:
                return found
            row = next((x for x in r.get("list", []) if x.get("symbol") == sym), None)
            if row is None or row.get("status") != "Trading":
                bad.append(f"{sym} ({'unknown' if row is None else row.get('status')})")
            else:
                found[sym] = row
        if bad:
            self.line("FAIL", "symbols", f"not trading on Bybit: {', '.join(bad)}")
        else:
            self.line("ok", "symbols", f"{', '.join(found)} trade")
        return found

    def keys_accepted(self, client: BybitClient) -> bool:
        r = self.call(client, "keys accepted", "get_api_key_information")
        if r is None:
            return False
        perms = r.get("permissions") or {}
        contract = perms.get("ContractTrade") or []
        if str(r.get("readOnly")) == "1":
            self.line("FAIL", "keys accepted", "the key is read-only: it cannot place orders (give it Contract "
                      "Orders and Positions permissions)")
        elif not {"Order", "Position"} <= set(contract):
            self.line("FAIL", "keys accepted", f"the key lacks Contract permissions Order and Position "
                      f"(has: {', '.join(contract) or 'none'})")
        else:
            self.line("ok", "keys accepted", f"read-write, Contract permissions {', '.join(contract)}")
        return True

    def account(self, client: BybitClient) -> None:
        r = self.call(client, "account type", "get_account_info")
        if r is None:
            return
        status = int(r.get("unifiedMarginStatus") or 0)
        if status in (3, 4, 5, 6):
            self.line("ok", "account type", f"Unified Trading Account (status {status}, {r.get('marginMode', '?')})")
        else:
            self.line("FAIL", "account type", f"not a Unified Trading Account (unifiedMarginStatus {status}): "
                      "upgrade the account to UTA on Bybit")

    def positions(self, client: BybitClient, inst: dict[str, dict]) -> None:
        s = self.s
        hedge_open, hedge_flat, levs = [], [], []
        for sym in s.symbols:
            r = self.call(client, "position mode", "get_positions", category="linear", symbol=sym)
            if r is None:
                return
            rows = r.get("list", [])
            idxs = {int(x.get("positionIdx") or 0) for x in rows}
            if idxs & {1, 2}:
                (hedge_open if any(float(x.get("size") or 0) for x in rows) else hedge_flat).append(sym)
            lev = rows[0].get("leverage", "?") if rows else "?"
            max_lev = float((inst.get(sym) or {}).get("leverageFilter", {}).get("maxLeverage") or 0)
            levs.append((sym, lev, max_lev))
        if not (hedge_open or hedge_flat):
            self.line("ok", "position mode", "one-way (positionIdx 0)")
        elif s.hedge_mode:
            self.line("ok", "position mode", "hedge (BYBIT_HEDGE_MODE=true: orders use positionIdx 1/2)")
        elif hedge_open:
            self.line("FAIL", "position mode", f"hedge mode with open positions ({', '.join(hedge_open)}) and "
                      "BYBIT_HEDGE_MODE=false: scalpdesk will not open positions. Close them, set Position Mode to "
                      "One-Way (Derivatives > Preferences), or set BYBIT_HEDGE_MODE=true")
        else:
            self.line("warn", "position mode", "hedge mode, no positions: scalpdesk switches it to one-way at start")
        for sym, lev, max_lev in levs:
            text = f"{sym} at {lev}x now; scalpdesk sets {s.leverage_min:g}-{s.leverage_max:g}x before each open"
            if max_lev and max_lev < s.leverage_min:
                self.line("FAIL", "leverage", f"{text}, but Bybit allows at most {max_lev:g}x")
            else:
                self.line("ok", "leverage", text + (f" (max {max_lev:g}x)" if max_lev else ""))

    def margin(self, client: BybitClient) -> None:
        r = self.call(client, "margin", "get_wallet_balance", accountType="UNIFIED")
        if r is None:
            return
        rows = r.get("list", [])
        if not rows:
            self.line("FAIL", "margin", "no UNIFIED wallet")
            return
        avail = float(rows[0].get("totalAvailableBalance") or 0)
        equity = float(rows[0].get("totalEquity") or 0)
        if avail < self.s.min_margin_usdt:
            self.line("FAIL", "margin", f"{avail:.2f} USD available, under SCALPDESK_MIN_MARGIN_USDT="
                      f"{self.s.min_margin_usdt:g} (equity {equity:.2f})")
        else:
            self.line("ok", "margin", f"{avail:.2f} USD available of {equity:.2f} equity")


def run_doctor(settings: Settings, out: Callable[[str], None] = print) -> int:
    return Doctor(settings, out).run()


def main(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from engine.config import load_settings

    p = argparse.ArgumentParser(prog="scalpdesk doctor", description="Check that the configured Bybit venue is "
                                "ready: keys, clock, account, position mode, leverage, margin, symbols.")
    p.add_argument("--config", type=Path)
    p.add_argument("--venue", choices=["sim", "paper", "testnet", "demo", "live"])
    p.add_argument("--live", action="store_true", help="check the live venue (read-only)")
    p.add_argument("--symbols")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {"venue": "live" if args.live else args.venue, "symbols": args.symbols}
    try:
        settings = load_settings(args.config, **overrides)
    except SettingsError as e:
        print(f"scalpdesk doctor: {e}", file=sys.stderr)
        return 2
    return run_doctor(settings)
