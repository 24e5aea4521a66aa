"""Write to a StateStore in a tight loop for the kill test in tests/test_store.py.

Usage: python tests/store_writer.py STATE_DIR RUN

Prints "ready" once the store is open, then after each completed round of writes the
round's number, flushed: everything up to the last number printed is durable, so the
parent, which SIGKILLs this process at a random moment, checks that all of it survived.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models import CloseReason, Intent, PositionMeta, Trade  # noqa: E402
from engine.store import StateStore  # noqa: E402

DAY = 1_767_225_600.0  # 2026-01-01 00:00 UTC: every trade lands in one day file


def main() -> None:
    state_dir, run = Path(sys.argv[1]), int(sys.argv[2])
    with StateStore(state_dir) as store:
        print("ready", flush=True)
        i = 0
        while True:
            ts = DAY + run * 1000 + i
            link = f"r{run}-{i}"
            store.put_intent(Intent(intent_id=link, kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01,
                                    created_at=ts, updated_at=ts))
            # A record replaced in place: its qty only grows, run after run.
            store.put_position(PositionMeta(symbol="BTCUSDT", side="long", opened_at=DAY,
                                            time_in_trade_limit_sec=600, qty=run * 1_000_000 + i))
            store.add_trade(Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=100.0,
                                  exit_price=101.0, opened_at=ts, closed_at=ts, pnl=0.01, roi_pct=1.0,
                                  duration_sec=0.0, reason=CloseReason.TAKE_PROFIT, intent_id=link))
            print(i, flush=True)
            i += 1


if __name__ == "__main__":
    main()
