"""Keep camera credentials out of logs and events."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::(?P<password>[^/\s]*))?@")


def mask_url(text: str | int) -> str:
    """Replace the password of every ``scheme://user:password@host`` in ``text`` with ``***``.

    ``rtsp://admin:s3cret@10.0.0.5/stream`` -> ``rtsp://admin:***@10.0.0.5/stream``. Non-URLs pass unchanged.
    """
    text = str(text)

    def _mask(match: re.Match) -> str:
        user = match.group("user")
        if match.group("password") is None:
            return f"{match.group('scheme')}{user}@"
        return f"{match.group('scheme')}{user}:***@"

    return _USERINFO.sub(_mask, text)
