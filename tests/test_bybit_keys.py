"""API keys: from the environment or a 0600 key file (looser refused, saying why), and
never in a log line, an exception message, an event, a snapshot or a state file."""

import asyncio
import logging
import os

import pytest

from engine.config import SettingsError, load_settings
from engine.factory import build_venue
from engine.clock import SystemClock
from engine.models import OrderRequest
from engine.venues.bybit import BybitVenue
from engine.venues.keys import load_keys, read_key_file
from tests.fakes.bybit_exchange import FAKE_KEY, FAKE_SECRET
from tests.fakes.bybit_rig import leaks, make_bybit_rig, state_text
from tests.fakes.bybit_server import BybitFakeServer


def test_keys_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BYBIT_API_KEY", FAKE_KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", FAKE_SECRET)
    keys = load_keys(load_settings(state_dir=tmp_path, venue="testnet"))
    assert (keys.key, keys.secret) == (FAKE_KEY, FAKE_SECRET)
    assert leaks(repr(keys) + str(keys)) == []


def test_half_a_key_pair_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("BYBIT_API_KEY", FAKE_KEY)
    with pytest.raises(SettingsError, match="BYBIT_API_SECRET is not set") as e:
        load_keys(load_settings(state_dir=tmp_path, venue="testnet"))
    assert leaks(str(e.value)) == []


def test_no_keys_for_a_bybit_venue_says_how_to_give_them(tmp_path):
    with pytest.raises(SettingsError, match="SCALPDESK_BYBIT_KEY_FILE"):
        build_venue(load_settings(state_dir=tmp_path, venue="demo"), SystemClock())


def _key_file(tmp_path, mode, text=f"{FAKE_KEY}\n{FAKE_SECRET}\n"):
    p = tmp_path / "bybit.keys"
    p.write_text(text)
    os.chmod(p, mode)
    return p


@pytest.mark.parametrize("text", [f"{FAKE_KEY}\n{FAKE_SECRET}\n",
                                  f"# demo account\nBYBIT_API_KEY={FAKE_KEY}\nBYBIT_API_SECRET='{FAKE_SECRET}'\n"])
def test_a_0600_key_file_is_read(tmp_path, text):
    p = _key_file(tmp_path, 0o600, text)
    keys = load_keys(load_settings(state_dir=tmp_path, venue="testnet", bybit_key_file=p))
    assert (keys.key, keys.secret) == (FAKE_KEY, FAKE_SECRET)
    assert read_key_file(_key_file(tmp_path, 0o400, text)).key == FAKE_KEY


@pytest.mark.parametrize("mode, who", [(0o644, "its group and other users"), (0o640, "its group"), (0o604, "other users")])
def test_a_looser_key_file_is_refused_saying_why(tmp_path, mode, who):
    p = _key_file(tmp_path, mode)
    with pytest.raises(SettingsError) as e:
        load_keys(load_settings(state_dir=tmp_path, venue="testnet", bybit_key_file=p))
    msg = str(e.value)
    assert f"mode {mode:04o}" in msg and who in msg and f"chmod 600 {p}" in msg
    assert leaks(msg) == []


def test_a_key_file_with_one_line_is_refused_without_echoing_it(tmp_path):
    p = _key_file(tmp_path, 0o600, FAKE_KEY + "\n")
    with pytest.raises(SettingsError, match="two lines") as e:
        read_key_file(p)
    assert leaks(str(e.value)) == []


def test_cli_refuses_missing_keys_and_a_loose_key_file_with_exit_2(tmp_path, capsys, monkeypatch):
    from app.cli import main

    args = ["--headless", "--venue", "testnet", "--state-dir", str(tmp_path / "s")]
    assert main(args) == 2  # no keys at all: refused before anything starts
    assert "needs Bybit API keys" in capsys.readouterr().err
    monkeypatch.setenv("SCALPDESK_BYBIT_KEY_FILE", str(_key_file(tmp_path, 0o644)))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and leaks(err) == []


def test_keys_never_reach_logs_events_messages_or_state(tmp_path, caplog):
    """Run failure paths whose raw texts carry the key (Bybit's 10004 quotes the signed
    string, key included) and look for the key and the secret everywhere."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with BybitFakeServer() as srv:
        # 1. a wrong secret: 10004 with origin_string[...<key>...]
        rig = make_bybit_rig(srv, tmp_path / "bad", bybit_api_secret="wrong-secret-not-real-00")
        asyncio.run(rig.engine.start(schedule=False))
        assert "10004" in rig.engine.degraded and "***" in rig.engine.degraded
        texts += [rig.dump(), rig.engine.degraded]
        try:
            rig.venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id="o-k"))
        except Exception as e:  # noqa: BLE001
            texts.append(f"{e!s} {e!r}")
        texts += [repr(rig.venue), repr(rig.venue.client), repr(rig.venue.client.session()), repr(rig.settings)]
        rig.store.close()
        texts.append(state_text(tmp_path / "bad"))
        # 2. good keys, then timeouts, a 5xx, a rejection and a read-only key
        rig = make_bybit_rig(srv, tmp_path / "good")
        asyncio.run(rig.engine.start(schedule=False))
        ex = srv.exchange
        ex.fail("/v5/order/create", "delay_after", seconds=1.0)
        ex.fail("/v5/position/list", "http", status=502)
        venue: BybitVenue = rig.venue  # type: ignore[assignment]
        for link in ("o-k1", "o-k2"):
            try:
                venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id=link))
            except Exception as e:  # noqa: BLE001
                texts.append(f"{e!s} {e!r}")
        asyncio.run(rig.engine.run_monitor())
        ex.read_only.add(FAKE_KEY)
        asyncio.run(rig.engine.force_close("BTCUSDT"))
        texts += [rig.dump(), rig.engine.degraded]
        rig.store.close()
        texts.append(state_text(tmp_path / "good"))
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    everything = "\n".join(texts)
    assert "10005" in everything  # the read-only refusal did happen ...
    assert leaks(everything) == []  # ... and nothing anywhere holds the key or the secret
