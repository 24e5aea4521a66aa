"""The systemd user unit the README gives a trader to copy runs a command scalpdesk accepts."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

from app.cli import _run_parser
from app.engine_cmd import _parser as engine_parser
from engine.config import load_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def unit() -> configparser.ConfigParser:
    text = README.read_text()
    block = re.search(r"```ini\n(.*?)```", text, re.S)
    assert block, "the README has no systemd unit"
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str  # systemd's keys are case-sensitive
    cp.read_string(block.group(1))
    return cp


def test_the_unit_runs_the_engine_in_the_foreground_in_auto_mode(tmp_path):
    cp = unit()
    assert {"Unit", "Service", "Install"} <= set(cp.sections())
    exec_start = shlex.split(cp["Service"]["ExecStart"])
    assert exec_start[0].endswith("/bin/scalpdesk")
    args = _run_parser().parse_args(exec_start[1:])
    assert args.headless and args.mode == "auto"
    # the flags make valid settings (an unknown or out-of-range one would stop the start)
    settings = load_settings(None, mode=args.mode, state_dir=tmp_path)
    assert settings.mode == "auto"


def test_the_unit_gives_a_stop_time_longer_than_the_engine_takes_to_give_up():
    from engine.config import Settings

    service = unit()["Service"]
    assert service["Restart"] == "on-failure"  # a `scalpdesk stop` (exit 0) is not restarted
    giveup = Settings.model_fields["venue_retry_giveup_sec"].default
    assert float(service["TimeoutStopSec"]) > giveup


def test_the_documented_status_and_stop_commands_parse():
    text = README.read_text()
    for line in re.findall(r"^scalpdesk (status|stop)( --force)?", text, re.M):
        cmd, force = line
        args = engine_parser(f"scalpdesk {cmd}", stop=cmd == "stop").parse_args(["--force"] if force else [])
        assert getattr(args, "force", False) == bool(force)
