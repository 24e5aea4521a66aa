"""The real `scalpdesk` command in a real terminal (tmux), driven as an operator over
SSH would: start on the simulated market, see the panels, approve a decision,
force close the position, quit."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

REPO = Path(__file__).resolve().parent.parent
# The simulated market follows the UTC day (quiet nights, busy afternoons, quiet
# weekends), so what it shows in the test's first seconds depends on when the test
# runs. Seed 7 makes the rule decider propose on its first cycle at every start time
# tried (96 across a week); the test still waits for whatever the market proposes.
SEED = 7


def scalpdesk_command() -> list[str]:
    """The installed entry point when there is one, else the same main() via -m."""
    for candidate in (Path(sys.executable).parent / "scalpdesk", shutil.which("scalpdesk")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    return [sys.executable, "-m", "app.cli"]


class Tmux:
    """One private tmux server (its own socket), one pane of 160x48."""

    def __init__(self, name: str, status_file: Path) -> None:
        self.base = ["tmux", "-L", name]
        self.status_file = status_file
        self.target = f"{name}:0.0"
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True).stdout

    def start(self, command: str, env: dict[str, str], cwd: Path, conf: Path) -> None:
        # COLUMNS / LINES inherited from the test runner would override the pane's real size
        # (shutil.get_terminal_size reads them first): they are unset for the console.
        # The pane stays after the program exits, so its exit status and last screen can be read.
        conf.write_text("set -g remain-on-exit on\nset -g default-terminal xterm-256color\n")
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.run("-f", str(conf), "new-session", "-d", "-s", self.name, "-x", "160", "-y", "48",
                 f"cd {shlex.quote(str(cwd))} && env -u COLUMNS -u LINES {exports} {command}; "
                 f"echo $? > {shlex.quote(str(self.status_file))}")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", self.target, key)
            time.sleep(0.15)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.target)

    def dead(self) -> tuple[bool, str]:
        """Whether the program has exited, and its exit status (tmux's own pane_dead_status
        is sometimes left empty by tmux 3.3, so the shell writes it to a file)."""
        if self.run("display-message", "-p", "-t", self.target, "#{pane_dead}").strip() != "1":
            return False, ""
        status = self.status_file.read_text().strip() if self.status_file.exists() else "?"
        return True, status

    def wait_for(self, *texts: str, timeout: float = 20.0, every: float = 0.2, nudge=None) -> str:
        deadline = time.monotonic() + timeout
        last_nudge = time.monotonic()
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if self.dead()[0] or time.monotonic() > deadline:
                raise AssertionError(f"waited for {texts!r}; the screen shows:\n{screen}")
            if nudge is not None and time.monotonic() - last_nudge > 6:
                nudge()
                last_nudge = time.monotonic()
            time.sleep(every)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def test_an_operator_approves_force_closes_and_quits_in_tmux(tmp_path):
    state = tmp_path / "state"
    env = {
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "SCALPDESK_STATE_DIR": str(state),
        # The market and the engine's clock at 60x (the market's look depends on the hour,
        # so the test sweeps through it rather than betting on one moment): a cycle every
        # 5 market minutes (5 wall seconds), approvals and cooldowns long enough for a person.
        "SCALPDESK_SIM_SPEED": "60",
        "SCALPDESK_DECISION_INTERVAL_SEC": "300",
        "SCALPDESK_MONITOR_INTERVAL_SEC": "60",
        "SCALPDESK_APPROVAL_TIMEOUT_SEC": "3600",
        "COOLDOWN_MINUTES": "120",
        # The rules decider trades a stretch that clears the round trip twice: at Bybit's fees
        # that is about 11 trades a day, at any hour perhaps none for the test's minute. On a
        # fee tier near zero the floor is a small stretch, so an entry comes within minutes.
        "SCALPDESK_TAKER_FEE_PCT": "0.005",
        "SCALPDESK_SLIPPAGE_BPS": "0",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "LANG": "C.UTF-8",
    }
    command = " ".join(shlex.quote(c) for c in scalpdesk_command()) + f" --seed {SEED}"
    tmux = Tmux(f"scalpdesk-test-{os.getpid()}", tmp_path / "exit-status")
    try:
        tmux.start(command, env, REPO, tmp_path / "tmux.conf")
        # the panels and the status bar
        tmux.wait_for("APPROVE", "SIM", "RUNNING", "Decisions", "Cooldowns", "Positions", "Log", "Quit",
                      timeout=30)
        # run a cycle now; wait for a decision to approve (the scheduler runs one every 5 s too)
        tmux.keys("r")
        screen = tmux.wait_for("waiting for approval", "PENDING", timeout=45, nudge=lambda: tmux.keys("r"))
        tmux.keys("y")
        screen = tmux.wait_for("approved by operator", "Position opened", "Positions (1)", timeout=20)
        symbol = next(s for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT") if f"Position opened: {s}" in screen)
        # force close it from the positions panel
        tmux.keys("2", "c")
        tmux.wait_for(f"Force close {symbol}?", "PnL now", timeout=10)
        tmux.keys("y")
        screen = tmux.wait_for(f"FORCE CLOSE requested for {symbol}", f"Position closed: {symbol}",
                               "Cooldowns (1)", "FORCE_CLOSE", timeout=20)
        assert "Positions (1)" not in screen
        # quit: the console says the engine (started in the background for it) keeps
        # running, and offers to stop it too: S
        tmux.keys("q")
        tmux.wait_for("Quit the console?", "The engine keeps running", "stop the engine too", timeout=10)
        tmux.keys("S")
        deadline = time.monotonic() + 30
        while not tmux.dead()[0] and time.monotonic() < deadline:
            time.sleep(0.3)
        dead, status = tmux.dead()
        assert dead and status == "0", tmux.screen()
        deadline = time.monotonic() + 30  # the engine stops on its own after answering
        while (state / "engine.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (state / "engine.sock").exists()
    finally:
        tmux.kill()
        _stop_background_engine(state)

    # the journal says what the operator did, and the state files were released
    from engine.models import CloseReason
    from engine.store import StateStore

    with StateStore(state) as store:
        trades = store.trades()
        assert [t.reason for t in trades] == [CloseReason.FORCE_CLOSE] and trades[0].symbol == symbol
        assert store.get_cooldown(symbol) is not None
        assert any(r.status == "EXECUTED" for r in store.decisions())


def _stop_background_engine(state) -> None:
    """A failed run must not leave the engine the console started running on."""
    lock = state / "scalpdesk.lock"
    pid = lock.read_text().strip() if lock.exists() else ""
    if pid.isdigit():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
