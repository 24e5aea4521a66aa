"""Settings: defaults < TOML file < environment < command-line flags.

pydantic-settings does the layering and the parsing; this module adds the original
system's variable names (so its users can move over), the allowed ranges, and one
clear line for an invalid value.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "SCALPDESK_"

# The original system's variables keep their names (no prefix).
# So do the venues' and the AI's own well-known variables.
LEGACY_ENV = {
    "enable_reverse": "POSITION_MANAGER_ENABLE_REVERSE",
    "hedge_mode": "BYBIT_HEDGE_MODE",
    "default_time_in_trade_limit_sec": "DEFAULT_TIME_IN_TRADE_LIMIT_SEC",
    "cooldown_minutes": "COOLDOWN_MINUTES",
    "bybit_api_key": "BYBIT_API_KEY",
    "bybit_api_secret": "BYBIT_API_SECRET",
    "bybit_base_url": "BYBIT_BASE_URL",
    "bybit_ws_url": "BYBIT_WS_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_model": "OPENAI_MODEL",
    "openai_base_url": "OPENAI_BASE_URL",
}

# Values never echoed in an error message, a log line or the UI.
SECRET_FIELDS = {"bybit_api_key", "bybit_api_secret", "openai_api_key"}

_toml_file: ContextVar[Path | None] = ContextVar("_toml_file", default=None)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "scalpdesk"


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scalpdesk" / "config.toml"


def _legacy(name: str) -> AliasChoices:
    return AliasChoices(LEGACY_ENV[name], name)


class SettingsError(Exception):
    """An invalid setting: the message is one line per problem, ready to print."""


class Settings(BaseSettings):
    """Every setting of scalpdesk. Env: SCALPDESK_<NAME>, except the four legacy names."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
    )

    # where and how
    venue: Literal["sim", "paper", "testnet", "demo", "live"] = "sim"
    mode: Literal["approve", "auto"] = "approve"
    decider: Literal["rules", "openai"] = "rules"
    symbols: Annotated[list[str], NoDecode] = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    state_dir: Path = Field(default_factory=default_state_dir)

    # jobs
    decision_interval_sec: int = Field(60, ge=5, le=3600)
    monitor_interval_sec: int = Field(30, ge=1, le=300)
    cleanup_interval_sec: int = Field(3600, ge=60, le=86400)
    approval_timeout_sec: int = Field(120, ge=10, le=3600)
    intent_ttl_sec: int = Field(21600, ge=600, le=7 * 86400)
    history_retention_days: int = Field(30, ge=1, le=3650)

    # the original system's settings
    enable_reverse: bool = Field(False, validation_alias=_legacy("enable_reverse"))
    hedge_mode: bool = Field(False, validation_alias=_legacy("hedge_mode"))
    default_time_in_trade_limit_sec: int = Field(
        2400, validation_alias=_legacy("default_time_in_trade_limit_sec")
    )
    cooldown_minutes: float = Field(5, gt=0, le=1440, validation_alias=_legacy("cooldown_minutes"))

    # risk
    min_margin_usdt: float = Field(10.0, ge=0)
    max_open_positions: int = Field(3, ge=1, le=50)
    min_confidence: float = Field(0.5, ge=0, le=1)

    # allowed ranges (the guardrails clamp into these)
    tp_pct_min: float = Field(1.0, gt=0, le=50)
    tp_pct_max: float = Field(3.0, gt=0, le=50)
    sl_pct_min: float = Field(1.0, gt=0, le=50)
    sl_pct_max: float = Field(2.0, gt=0, le=50)
    leverage_min: float = Field(3, ge=1, le=100)
    leverage_max: float = Field(10, ge=1, le=100)
    size_pct_min: float = Field(8, gt=0, le=100)
    size_pct_max: float = Field(20, gt=0, le=100)
    time_limit_min_sec: int = Field(1200, ge=60, le=86400)
    time_limit_max_sec: int = Field(3600, ge=60, le=86400)
    cooldown_min_sec: int = Field(300, ge=0, le=86400)
    cooldown_max_sec: int = Field(1800, ge=0, le=86400)

    # CRASH_GUARD: no new position when the last 5 min moved more than
    # crash_return_atr_mult × ATR(14, 1m), or the last 1m candle's range exceeds
    # crash_range_atr_mult × ATR(14, 1m).
    crash_return_atr_mult: float = Field(4.0, gt=0, le=100)
    crash_range_atr_mult: float = Field(3.0, gt=0, le=100)

    # missing TP/SL come from ATR(14, 5m) times these, then clamped
    tp_atr_mult: float = Field(2.0, gt=0, le=50)
    sl_atr_mult: float = Field(1.5, gt=0, le=50)
    # a trailing stop, once armed, trails the best price by this distance (percent of price)
    trail_distance_pct: float = Field(0.5, gt=0, le=10)

    # risk limits (guardrails that block entries, never exits; 0 switches one off)
    # DAILY_LOSS_LIMIT: equity this many percent below the day's starting equity (00:00 UTC,
    # realised and unrealised) blocks entries until the next UTC day
    daily_loss_limit_pct: float = Field(3.0, ge=0, le=100)
    # MAX_DRAWDOWN: equity this many percent below its peak pauses entries until the operator resumes
    max_drawdown_pct: float = Field(10.0, ge=0, le=100)
    # MAX_TRADES_PER_DAY: positions opened since 00:00 UTC
    max_trades_per_day: int = Field(30, ge=0, le=1000)
    # FEES_EXCEED_EDGE: a take profit must clear the round trip (taker fee and slippage, both
    # sides) this many times over
    fee_edge_multiple: float = Field(2.0, ge=0, le=50)
    # the costs of a trade: the guard above reckons with them, and the paper venue (sim, paper,
    # replay) charges them; Bybit's taker fee is 0.055 %
    taker_fee_pct: float = Field(0.055, ge=0, le=1)
    slippage_bps: float = Field(2.0, ge=0, le=100)

    # the original system's "future enhancements" (engine.enhance), each can be switched off
    # the time limit scales with ATR(1m) against its median of the last 24 h (higher volatility,
    # shorter limit), within time_limit_min_sec–time_limit_max_sec. Off by default: the default
    # rules decider fades moves, which needs its hour; measured over 30 days on seeds 3 and 11,
    # switching it off took the expectancy from -0.16/-0.55 to +1.54/+0.58 USDT a trade.
    dynamic_time_limit: bool = False
    # after a loss the cooldown grows by this factor per loss in a row of the symbol, within
    # cooldown_min_sec–cooldown_max_sec; a win resets it
    adaptive_cooldown: bool = True
    cooldown_loss_factor: float = Field(1.5, ge=1, le=10)
    # multi-timeframe confirmation: two of the 1m/5m/15m trends with the side leave the
    # confidence as it is, three raise it a step, each one short of two and each against cut
    # a step; before leverage and size are derived from it. Off by default: the default rules
    # decider fades stretched moves, so its entries go against the short trends by design and
    # a trend-following confirmation would cut exactly the trades it takes (for an AI decider
    # that follows trends, switch it on).
    mtf_confirmation: bool = False
    mtf_confidence_step: float = Field(0.05, ge=0, le=0.5)

    # Bybit (testnet, demo, live; paper reads its prices). Keys from the environment or a
    # key file that must be mode 0600 (two lines: key, secret).
    bybit_api_key: SecretStr | None = Field(None, validation_alias=_legacy("bybit_api_key"))
    bybit_api_secret: SecretStr | None = Field(None, validation_alias=_legacy("bybit_api_secret"))
    bybit_key_file: Path | None = None
    bybit_base_url: str | None = Field(None, validation_alias=_legacy("bybit_base_url"))
    bybit_ws_url: str | None = Field(None, validation_alias=_legacy("bybit_ws_url"))
    bybit_recv_window_ms: int = Field(5000, ge=1000, le=60000)
    bybit_timeout_sec: float = Field(10.0, gt=0, le=120)
    # an order whose outcome stays unknown this long is FAILED (adopted if it shows up later)
    order_unknown_timeout_sec: float = Field(60.0, ge=5, le=3600)
    # rate limits and 5xx: back off with the same orderLinkId, give up after this long
    venue_retry_giveup_sec: float = Field(30.0, ge=1, le=600)
    # requests of an endpoint's per-second budget (X-Bapi-Limit-Status) kept for exits: an
    # entry waits for the next window rather than spend them (a close spends down to 0)
    bybit_rate_reserve: int = Field(1, ge=0, le=50)
    # Bybit's WebSocket streams (prices, and with keys positions/executions/orders/wallet);
    # false: REST polling only
    bybit_ws: bool = True
    # a public stream silent this long is stale (REST polling takes over); twice as long, it
    # is reconnected
    ws_stale_sec: float = Field(10.0, ge=1, le=300)

    # marks that tick: positions' marks and uPnL and the market watch's prices, published at
    # most this many times a wall-clock second between monitor passes (0: with them only)
    marks_per_sec: float = Field(4.0, ge=0, le=20)
    # while no stream is live (Bybit venues, paper), marks are polled over REST this often
    marks_poll_sec: float = Field(2.0, ge=0.2, le=60)

    # the AI decider (OpenAI or any OpenAI-compatible server)
    openai_api_key: SecretStr | None = Field(None, validation_alias=_legacy("openai_api_key"))
    openai_model: str = Field("gpt-4.1-mini", validation_alias=_legacy("openai_model"))
    openai_base_url: str | None = Field(None, validation_alias=_legacy("openai_base_url"))
    # auto: json_schema, falling back to json_object + validation where a server lacks it
    llm_output: Literal["auto", "json_schema", "json_object"] = "auto"
    llm_timeout_sec: float = Field(20.0, gt=0, le=600)
    llm_max_retries: int = Field(2, ge=0, le=10)
    llm_daily_budget_usd: float = Field(5.0, ge=0, le=100_000)  # 0: no budget
    llm_price_input_per_mtok: float = Field(0.40, ge=0, le=1000)  # USD per million input tokens
    llm_price_output_per_mtok: float = Field(1.60, ge=0, le=1000)

    # the simulated market and the paper venue
    sim_seed: int = 7
    sim_speed: float = Field(1.0, gt=0, le=1000)
    paper_equity: float = Field(10_000.0, gt=0)

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in (p.strip() for p in v.split(",")) if s]
        if isinstance(v, list):
            v = [str(s).strip().upper() for s in v]
            if not v:
                raise ValueError("at least one symbol")
            bad = [s for s in v if not s.isalnum() or not s.endswith("USDT")]
            if bad:
                raise ValueError(f"USDT perpetual symbols like BTCUSDT, got {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "Settings":
        for lo, hi in (
            ("tp_pct_min", "tp_pct_max"),
            ("sl_pct_min", "sl_pct_max"),
            ("leverage_min", "leverage_max"),
            ("size_pct_min", "size_pct_max"),
            ("time_limit_min_sec", "time_limit_max_sec"),
            ("cooldown_min_sec", "cooldown_max_sec"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise _RangeError(lo, f"{getattr(self, lo)} is above {env_name(hi)}={getattr(self, hi)}")
        if self.sim_speed != 1 and self.venue != "sim":
            raise _RangeError("sim_speed", f"{self.sim_speed:g}: only the sim venue can run faster than real time")
        t = self.default_time_in_trade_limit_sec
        if not self.time_limit_min_sec <= t <= self.time_limit_max_sec:
            raise _RangeError(
                "default_time_in_trade_limit_sec",
                f"{t}: allowed {self.time_limit_min_sec}–{self.time_limit_max_sec}",
            )
        return self

    @property
    def default_cooldown_sec(self) -> int:
        return int(self.cooldown_minutes * 60)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


class _RangeError(ValueError):
    def __init__(self, field: str, text: str) -> None:
        super().__init__(text)
        self.field = field


def env_name(field: str) -> str:
    return LEGACY_ENV.get(field, ENV_PREFIX + field.upper())


def _allowed(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:
        return ""
    ann = info.annotation
    choices = getattr(ann, "__args__", None)
    if getattr(ann, "__origin__", None) is Literal and choices:
        return "one of " + ", ".join(choices)
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        lo = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
    if lo is not None and hi is not None:
        return f"allowed {lo}–{hi}"
    if lo is not None:
        return f"allowed above {lo}"
    return ""


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        field = loc[0] if loc else ""
        # an alias location (legacy name) maps back to the field
        field = next((f for f, env in LEGACY_ENV.items() if env == field), field)
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _RangeError):
            lines.append(f"invalid setting {env_name(ctx_err.field)}={ctx_err}")
            continue
        value = "***" if field in SECRET_FIELDS else e.get("input")
        if e.get("type") == "extra_forbidden":
            lines.append(f"unknown setting {field!r} (value {value!r})")
            continue
        allowed = _allowed(field)
        msg = e.get("msg", "invalid")
        tail = f" ({allowed})" if allowed and allowed not in msg else ""
        lines.append(f"invalid setting {env_name(field)}={value!r}: {msg}{tail}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load the settings; raise SettingsError with one line per invalid value.

    config_file None means the default file if it exists. Overrides are CLI flags;
    a None override is "not given".
    """
    explicit = config_file is not None
    path = Path(config_file) if explicit else default_config_file()
    if explicit and not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    toml: Path | None = path if path.is_file() else None
    if toml is not None:
        try:
            tomllib.loads(toml.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"config file {toml} cannot be read: {e}") from None
    token = _toml_file.set(toml)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(_format_error(e)) from None
    finally:
        _toml_file.reset(token)
