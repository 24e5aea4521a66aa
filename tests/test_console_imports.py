"""The console's start imports what it draws with, not the engine: no venue clients
(pybit, openai), no scheduler, no store; and not the journal and the statistics, which
it imports once its first frame is on screen (the first frame comes sooner)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pybit", "openai", "apscheduler", "websockets", "tinydb", "engine.store", "engine.factory", "engine.engine",
         "app.screens", "engine.report", "widgets.journal", "widgets.statistics")


def test_the_console_start_does_not_import_the_engine():
    code = ("import json, sys, app.cli, app.console, app.serve; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_console_names_the_history_directory_as_the_store_does():
    from app import screens
    from engine import store

    assert screens.HISTORY_DIR == store.HISTORY_DIR
