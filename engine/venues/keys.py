"""Bybit API keys: from BYBIT_API_KEY / BYBIT_API_SECRET, or from a key file.

The key file (SCALPDESK_BYBIT_KEY_FILE) holds the key and the secret on two lines
(blank lines and # comments ignored; `BYBIT_API_KEY=...` / `BYBIT_API_SECRET=...`
lines work too). It must be a regular file of ours that only we can read or write
(mode 0600 or 0400): a looser one is refused, saying why and how to fix it, since
anyone who can read it can trade the account.

No message here ever contains a key or a secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.config import Settings, SettingsError
from engine.venues.bybit_http import ApiKeys


class KeysError(SettingsError):
    """Keys missing, or a key file that is unsafe or unreadable."""


def read_key_file(path: Path) -> ApiKeys:
    """The key pair in `path`, after checking who may read it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeysError(f"key file {path} does not exist (SCALPDESK_BYBIT_KEY_FILE)") from None
    except OSError as e:
        raise KeysError(f"key file {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeysError(f"key file {path} is not a regular file")
    loose = st.st_mode & 0o077
    if loose:
        who = " and ".join(w for w, bits in (("its group", 0o070), ("other users", 0o007)) if loose & bits)
        raise KeysError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: {who} can access it, so anyone there "
            f"could trade this account; refusing it. Fix: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KeysError(f"key file {path} belongs to another user (uid {st.st_uid}); refusing it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeysError(f"key file {path} cannot be read: {type(e).__name__}") from None
    named: dict[str, str] = {}
    plain: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if eq and name.strip() in ("BYBIT_API_KEY", "BYBIT_API_SECRET"):
            named[name.strip()] = value.strip().strip("\"'")
        else:
            plain.append(line)
    key = named.get("BYBIT_API_KEY") or (plain[0] if plain else "")
    secret = named.get("BYBIT_API_SECRET") or (plain[1] if len(plain) > 1 else "")
    if not key or not secret:
        raise KeysError(f"key file {path} must hold the API key and the API secret on two lines")
    return ApiKeys(key, secret)


def load_keys(settings: Settings) -> ApiKeys:
    """The keys for a Bybit venue: the environment first, else the key file."""
    key = settings.bybit_api_key.get_secret_value().strip() if settings.bybit_api_key else ""
    secret = settings.bybit_api_secret.get_secret_value().strip() if settings.bybit_api_secret else ""
    if key or secret:
        if not (key and secret):
            missing = "BYBIT_API_SECRET" if key else "BYBIT_API_KEY"
            raise KeysError(f"{missing} is not set: both BYBIT_API_KEY and BYBIT_API_SECRET are needed")
        return ApiKeys(key, secret)
    if settings.bybit_key_file is not None:
        return read_key_file(Path(settings.bybit_key_file).expanduser())
    raise KeysError(
        f"SCALPDESK_VENUE={settings.venue} needs Bybit API keys: set BYBIT_API_KEY and BYBIT_API_SECRET, "
        "or SCALPDESK_BYBIT_KEY_FILE to a mode-0600 file with the key and the secret on two lines"
    )
