"""Secrets out of anything printed or stored: a URL's user info (`https://user:pass@host`) and token-like query
parameters (`?token=...`, `&api_key=...`, `&sig=...`) are replaced by `***`."""

from __future__ import annotations

import re

_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/\s@'\"]+)@")
_TOKEN_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth|credential)s?))="
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the user info of every URL in it and every token-like query value replaced by ***."""
    text = _USER_INFO.sub(lambda m: f"{m['scheme']}***@", str(text))
    return _TOKEN_PARAM.sub(lambda m: f"{m['name']}=***", text)
