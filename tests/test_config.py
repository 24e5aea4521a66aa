"""Settings: layering (defaults < TOML < env < flags), legacy names, one-line errors."""

import pytest

from engine.config import SettingsError, load_settings


def test_defaults_keep_the_original_systems_values(tmp_path):
    s = load_settings()
    assert s.enable_reverse is False
    assert s.hedge_mode is False
    assert s.default_time_in_trade_limit_sec == 2400
    assert s.cooldown_minutes == 5 and s.default_cooldown_sec == 300
    assert s.venue == "sim" and s.mode == "approve" and s.decider == "rules"
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert (s.decision_interval_sec, s.monitor_interval_sec, s.cleanup_interval_sec) == (60, 30, 3600)
    assert s.intent_ttl_sec == 6 * 3600 and s.min_margin_usdt == 10
    assert (s.tp_pct_min, s.tp_pct_max, s.sl_pct_min, s.sl_pct_max) == (1, 3, 1, 2)
    assert (s.leverage_min, s.leverage_max, s.size_pct_min, s.size_pct_max) == (3, 10, 8, 20)
    assert (s.time_limit_min_sec, s.time_limit_max_sec) == (1200, 3600)
    assert (s.cooldown_min_sec, s.cooldown_max_sec) == (300, 1800)
    assert str(s.state_dir).endswith("scalpdesk")


def test_layering_toml_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('mode = "auto"\ndecision_interval_sec = 90\nmonitor_interval_sec = 20\nsymbols = ["BTCUSDT"]\n')
    s = load_settings(cfg)
    assert (s.mode, s.decision_interval_sec, s.monitor_interval_sec, s.symbols) == ("auto", 90, 20, ["BTCUSDT"])
    monkeypatch.setenv("SCALPDESK_DECISION_INTERVAL_SEC", "120")
    monkeypatch.setenv("SCALPDESK_SYMBOLS", "ethusdt, SOLUSDT")
    s = load_settings(cfg)
    assert s.decision_interval_sec == 120 and s.monitor_interval_sec == 20
    assert s.symbols == ["ETHUSDT", "SOLUSDT"]
    s = load_settings(cfg, decision_interval_sec=30, mode=None)
    assert s.decision_interval_sec == 30 and s.mode == "auto"


def test_default_config_file_is_read(monkeypatch, tmp_path):
    (tmp_path / "config" / "scalpdesk").mkdir(parents=True)
    (tmp_path / "config" / "scalpdesk" / "config.toml").write_text('venue = "sim"\nmode = "auto"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert load_settings().mode == "auto"


def test_legacy_variable_names(monkeypatch):
    monkeypatch.setenv("POSITION_MANAGER_ENABLE_REVERSE", "true")
    monkeypatch.setenv("BYBIT_HEDGE_MODE", "true")
    monkeypatch.setenv("DEFAULT_TIME_IN_TRADE_LIMIT_SEC", "1800")
    monkeypatch.setenv("COOLDOWN_MINUTES", "10")
    s = load_settings()
    assert s.enable_reverse and s.hedge_mode
    assert s.default_time_in_trade_limit_sec == 1800 and s.default_cooldown_sec == 600


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"SCALPDESK_DECISION_INTERVAL_SEC": "abc"}, "SCALPDESK_DECISION_INTERVAL_SEC='abc'"),
        ({"SCALPDESK_DECISION_INTERVAL_SEC": "1"}, "allowed 5–3600"),
        ({"DEFAULT_TIME_IN_TRADE_LIMIT_SEC": "100"}, "DEFAULT_TIME_IN_TRADE_LIMIT_SEC=100: allowed 1200–3600"),
        ({"SCALPDESK_VENUE": "moon"}, "SCALPDESK_VENUE='moon'"),
        ({"SCALPDESK_MODE": "yolo"}, "SCALPDESK_MODE='yolo'"),
        ({"SCALPDESK_SYMBOLS": "BTC-PERP"}, "SCALPDESK_SYMBOLS='BTC-PERP'"),
        ({"SCALPDESK_TP_PCT_MIN": "5"}, "SCALPDESK_TP_PCT_MIN=5.0 is above SCALPDESK_TP_PCT_MAX=3.0"),
        ({"COOLDOWN_MINUTES": "-1"}, "COOLDOWN_MINUTES='-1'"),
    ],
)
def test_invalid_value_is_one_clear_line(monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as e:
        load_settings()
    text = str(e.value)
    assert expected in text
    assert len(text.splitlines()) == 1


def test_bad_config_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match="nope.toml does not exist"):
        load_settings(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = \n")
    with pytest.raises(SettingsError, match="broken.toml cannot be read"):
        load_settings(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings(unknown)
