"""Checks on what a user gives to reach a server: a URL, a bearer token, a basic-auth pair.

Each bad value raises a ``ConfigError`` at construction, one sentence naming the value and
the fix, instead of a failure deep inside requests at the first request (``InvalidSchema``,
``InvalidHeader``, ``UnicodeEncodeError``). Secrets are never echoed: a message names the
position of a bad character, not the character or the secret.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from requests.auth import HTTPBasicAuth

from specwise.errors import ConfigError

__all__ = [
    "bad_token_char",
    "basic_auth_from",
    "check_bearer_token",
    "check_http_url",
    "check_timeout",
]


def check_http_url(url: str, *, what: str = "URL") -> str:
    """``url`` when it is an http(s) URL with a host; else a ConfigError with an example."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port_ok = parts is not None and (parts.port is None or parts.port >= 0)
    except ValueError:  # a port that is not a number, or out of range
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{what} {url!r} must start with http:// or https:// and name a host, e.g. "
            "http://127.0.0.1:9090",
            field="url",
        )
    if not port_ok or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(
            f"{what} {url!r} is not a valid URL (check the port and remove spaces), e.g. "
            "http://127.0.0.1:9090",
            field="url",
        )
    return url


def bad_token_char(token: str) -> str:
    """Why ``token`` cannot go in an ``Authorization: Bearer`` header ("" when it can).

    HTTP header values are ASCII; a bearer token (RFC 6750) is visible ASCII with no space.
    """
    lines = token.splitlines()
    if len(lines) > 1:
        return f"it holds {len(lines)} lines; a token is one line"
    for i, ch in enumerate(token, start=1):
        if ord(ch) > 0x7E:
            return f"character {i} is not ASCII (a token is ASCII, e.g. base64 or hex)"
        if ord(ch) < 0x21:
            return f"character {i} is a space or a control character"
    return ""


def check_bearer_token(token: str) -> str:
    """``token`` when an HTTP header can carry it; else a ConfigError (the token not shown)."""
    why = bad_token_char(token)
    if why:
        raise ConfigError(
            f"the bearer token cannot be sent in an HTTP header: {why}; put only the token, "
            "on one line, in the token file",
            field="bearer_token",
        )
    return token


def basic_auth_from(pair: tuple[str, str] | None) -> HTTPBasicAuth | None:
    """(user, password) as requests' basic auth, sent UTF-8 encoded (RFC 7617), so a
    password outside Latin-1 works instead of failing at the first request."""
    if pair is None:
        return None
    user, password = pair
    for what, value in (("user", user), ("password", password)):
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ConfigError(
                f"the basic-auth {what} contains a control character (a line break?); put it "
                "on one line",
                field=f"basic_auth_{what}",
            )
    if ":" in user:
        raise ConfigError(
            f"the basic-auth user {user!r} contains ':', which basic auth cannot carry; "
            "use a user name without it",
            field="basic_auth_user",
        )
    return HTTPBasicAuth(user.encode("utf-8"), password.encode("utf-8"))


def check_timeout(seconds: float) -> float:
    """An HTTP timeout: a finite number of seconds > 0 (requests raises on 0, NaN, < 0)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(
            f"timeout {seconds!r} must be a number of seconds, e.g. 5", field="timeout"
        )
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(
            f"timeout {seconds:g} must be a finite number of seconds > 0, e.g. 5", field="timeout"
        )
    return float(seconds)
