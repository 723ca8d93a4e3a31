"""Credentials never leave the process: every URI or message the suite prints, logs, tags or renders
passes through `redact`, which replaces the password of any `scheme://user:password@host` (and a
bare `scheme://token@host`) with `***`."""

import re

# scheme://userinfo@ where userinfo holds no '/', '@' or whitespace; the user name is kept when a
# password follows it (`alice:***@`), a lone token (`https://TOKEN@host`) is replaced whole
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s]+)@")


def _mask(match: re.Match) -> str:
    user, sep, _ = match["info"].partition(":")
    return f"{match['scheme']}{user}:***@" if sep else f"{match['scheme']}***@"


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by `***`."""
    return _USERINFO.sub(_mask, text)
