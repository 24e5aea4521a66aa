"""`scalpdesk doctor` against the loopback fake: one line per check, exit 1 on a failure,
never a key printed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.doctor import run_doctor
from tests.fakes.bybit_exchange import FAKE_KEY, FAKE_SECRET
from tests.fakes.bybit_rig import leaks, settings_for

ROOT = Path(__file__).resolve().parents[1]


def doctor(srv, tmp_path, **over):
    lines: list[str] = []
    rc = run_doctor(settings_for(srv, tmp_path, symbols="BTCUSDT,ETHUSDT", **over), lines.append)
    return rc, lines


def status(lines, name):
    return [ln.split()[0] for ln in lines if ln[5:].startswith(name + ":")]


def test_a_ready_account_passes_every_check(srv, tmp_path):
    rc, lines = doctor(srv, tmp_path)
    assert rc == 0, lines
    for name in ("keys", "clock", "symbols", "keys accepted", "account type", "position mode", "margin"):
        assert status(lines, name) == ["ok"], (name, lines)
    assert status(lines, "leverage") == ["ok", "ok"]  # one line per symbol
    assert any("BTCUSDT at 10x now" in ln for ln in lines)
    assert leaks("\n".join(lines)) == []
    # read-only: nothing was switched, set or ordered
    assert srv.count("/v5/position/switch-mode") + srv.count("/v5/position/set-leverage") + srv.count("/v5/order/create") == 0


@pytest.mark.parametrize(
    "setup, name, words",
    [
        (lambda ex: ex.read_only.add(FAKE_KEY), "keys accepted", "read-only"),
        (lambda ex: setattr(ex, "skew_ms", -3000), "clock", "ms off Bybit"),  # our clock 3 s ahead
        (lambda ex: setattr(ex, "unified", False), "account type", "not a Unified"),
        (lambda ex: setattr(ex, "wallet", 5.0), "margin", "under SCALPDESK_MIN_MARGIN_USDT"),
        (lambda ex: setattr(ex.instruments["ETHUSDT"], "status", "Settling"), "symbols", "ETHUSDT (Settling)"),
    ],
)
def test_each_failure_is_one_fail_line_and_exit_1(srv, tmp_path, setup, name, words):
    setup(srv.exchange)
    rc, lines = doctor(srv, tmp_path)
    assert rc == 1
    [line] = [ln for ln in lines if ln.startswith(f"FAIL {name}:")]
    assert words in line


def test_hedge_mode_with_positions_fails_and_says_how_to_fix(srv, tmp_path):
    ex = srv.exchange
    ex.position_mode = 3
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 1, "by-hand", reduce=False, create_type="CreateByUser")
    rc, lines = doctor(srv, tmp_path)
    assert rc == 1
    [line] = [ln for ln in lines if ln.startswith("FAIL")]
    assert "position mode" in line and "One-Way" in line and "BYBIT_HEDGE_MODE" in line


def test_refused_keys_fail_without_printing_them(srv, tmp_path):
    rc, lines = doctor(srv, tmp_path, bybit_api_secret="wrong-secret-not-real-00")
    assert rc == 1 and status(lines, "keys accepted") == ["FAIL"]
    assert "10004" in "\n".join(lines) and leaks("\n".join(lines)) == []


def test_the_doctor_command_runs_from_the_cli(srv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALPDESK_", "BYBIT_"))}
    env.update(PYTHONPATH=str(ROOT), SCALPDESK_VENUE="testnet", BYBIT_BASE_URL=srv.url, BYBIT_API_KEY=FAKE_KEY,
               BYBIT_API_SECRET=FAKE_SECRET, SCALPDESK_SYMBOLS="BTCUSDT", XDG_CONFIG_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "app.cli", "doctor"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("\nok ") + out.stdout.startswith("ok ") >= 7
    assert leaks(out.stdout + out.stderr) == []
    srv.exchange.read_only.add(FAKE_KEY)
    out = subprocess.run([sys.executable, "-m", "app.cli", "doctor"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 1 and "FAIL keys accepted" in out.stdout
