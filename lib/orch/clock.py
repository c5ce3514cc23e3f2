"""The wall clock, durations and times as orch reads and shows them.

Rules: all stored times are UTC epoch seconds (float).  now() honours ORCH_NOW
(an ISO 8601 instant or epoch seconds), frozen for the whole process, so a
one-pass verb can be run "at" any instant; delays and timeouts use
time.monotonic() and are never frozen.  Local time (TZ) is used only to read
bare clock times and to display.
"""

import os
import re
import time

from .errors import DATAERR, OrchError

_frozen = None

# Instants orch accepts: 2000-01-01 .. 9999-12-31 (UTC); durations up to 100 years.
# Anything else is a typo or an attack, and would break date arithmetic later.
MIN_INSTANT = 946684800.0
MAX_INSTANT = 253402300799.0
MAX_DURATION = 100 * 365 * 86400.0

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# re.ASCII: \d would take any script's digits, which float() then reads.
_DUR_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([dhms])", re.ASCII)
_NUMBER = re.compile(r"(\d+(?:\.\d+)?|\.\d+)", re.ASCII)
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?", re.ASCII)


def now():
    """Seconds since the epoch, or the instant ORCH_NOW names."""
    global _frozen
    fixed = os.environ.get("ORCH_NOW")
    if not fixed:
        return time.time()
    if _frozen is None or _frozen[0] != fixed:
        _frozen = (fixed, _parse_instant(fixed, "ORCH_NOW"))
    return _frozen[1]


def _parse_instant(text, what):
    text = text.strip()
    if _NUMBER.fullmatch(text):
        value = float(text)
    else:
        from datetime import datetime
        try:
            value = datetime.fromisoformat(text).timestamp()  # naive means local time
        except (ValueError, OverflowError, OSError):
            raise OrchError(f"{what}: not a time: {text!r} (want an ISO 8601 instant or "
                            "epoch seconds)", DATAERR) from None
    if not MIN_INSTANT <= value <= MAX_INSTANT:
        raise OrchError(f"{what}: {text!r} is out of range (years 2000 to 9999)", DATAERR)
    return value


def parse_duration(text, what="duration"):
    """'90s', '30m', '1h30m', '2d' -> seconds; a bare number is minutes (fractional ok)."""
    s = text.strip().lower()
    if _NUMBER.fullmatch(s):
        return _bounded(float(s) * 60, text, what)
    pos, total, last_unit = 0, 0.0, None
    for m in _DUR_PART.finditer(s):
        unit = m.group(2)
        if m.start() != pos or (last_unit and _UNITS[unit] >= _UNITS[last_unit]):
            break
        total += float(m.group(1)) * _UNITS[unit]
        pos, last_unit = m.end(), unit
    if not s or pos != len(s):
        raise OrchError(f"bad {what}: {text!r} (want e.g. 90s, 30m, 1h30m, 2d, or minutes)",
                        DATAERR)
    return _bounded(total, text, what)


def _bounded(seconds, text, what):
    if not seconds <= MAX_DURATION:  # also catches inf and nan
        raise OrchError(f"bad {what}: {text!r} (at most 100 years)", DATAERR)
    return seconds


def parse_seconds(text, what, low=0.0, high=MAX_DURATION):
    """Plain seconds (as flock -w and watch -n take them): ASCII digits, an
    optional fraction, within LOW..HIGH; else OrchError 65 naming WHAT."""
    if not _NUMBER.fullmatch(text.strip()) or not low <= float(text) <= high:
        raise OrchError(f"bad {what}: {text!r} (want seconds from {low:g} to {high:g}, "
                        "e.g. 10 or 0.5)", DATAERR)
    return float(text)


def parse_time(text, ref=None, what="time"):
    """'HH:MM[:SS]' (next such local time after REF) or an ISO 8601 instant -> epoch seconds."""
    ref = now() if ref is None else ref
    s = text.strip()
    m = _CLOCK.fullmatch(s)
    if m:
        from datetime import datetime, timedelta
        base = datetime.fromtimestamp(ref)
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        when = base.replace(hour=hh, minute=mm, second=ss, microsecond=0)
        if when.timestamp() <= ref:
            when += timedelta(days=1)
        return when.timestamp()
    if not s or s[0] not in "0123456789":
        raise OrchError(f"bad {what}: {text!r} (want HH:MM[:SS] or an ISO 8601 instant)", DATAERR)
    return _parse_instant(s, what)


def iso(ts):
    """Epoch seconds -> '2026-11-25T20:00:00Z' (None stays None)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def local(ts, with_date=True):
    """Epoch seconds -> local 'YYYY-MM-DD HH:MM:SS' for people."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(ts))


def fmt_duration(secs):
    """Seconds -> '1h30m', '45s', '2d3h' (largest two units)."""
    secs = int(round(abs(secs)))
    if secs < 60:
        return f"{secs}s"
    parts = []
    for unit in "dhms":
        n, secs = divmod(secs, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts[:2])


def relative(ts, ref=None):
    """'in 4m', '3h ago' or 'now', relative to REF (default now())."""
    if ts is None:
        return ""
    delta = ts - (now() if ref is None else ref)
    if abs(delta) < 1:
        return "now"
    return f"in {fmt_duration(delta)}" if delta > 0 else f"{fmt_duration(delta)} ago"
