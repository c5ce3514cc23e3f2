"""Usage limits: tell from a pane's screen whether its agent is stopped at one, and until when.

Rules the screen detector relies on:
- Only the bottom counts: the last 15 non-blank lines hold the agent's latest notice and its
  prompt area.  Anything higher is earlier output, which may quote limit text (docs, logs, grep
  hits) long after the limit is gone.
- A notice is a line of its own: after optional indentation and Claude Code's `⎿` result marker
  it starts with a known notice phrase, and after its reset clause only punctuation or a slash
  command suggestion (`/upgrade ...`) may follow.  A line that merely contains the phrase (a shell
  command, a log line, a string in code) is not a notice.  The phrases are listed, not guessed:
  "Context limit reached", "Approaching usage limit" and "Opus limit reached, now using Sonnet"
  leave the agent working, and holding its check-ins for hours would be the worse mistake.
- The terminal wraps a long notice onto the next line, at a space or, when a word does not fit,
  inside it, so each line is also read joined to the next both ways; the reading that yields the
  most (a reset time, a zone) wins.
- A reset is a wall-clock time in the zone the notice names, else the caller's local zone, else
  the process's.  A bare time already past means tomorrow; a date without a year means its next
  occurrence; `|EPOCH` (headless mode) is UTC epoch seconds.  An unknown zone falls back to the
  local one: a reset a few hours off beats a scheduler that crashes on a screen.
- `API Error ... 429` (rate limited, or 529 overloaded) is transient: the CLI retries by itself
  within seconds, so a check-in waits briefly instead of holding the account.
- The rate-limit options menu (`/rate-limit-options`, whose first option is "Stop and wait for
  limit to reset") only appears at a limit, so it alone means limited, even when the notice line
  above it cannot be read.
"""

import os
import re
import time
from collections import namedtuple

from . import clock

# ---------------------------------------------------------------------------------------------
# Screen detection: a pure function of the screen text, the clock and the local zone.
# ---------------------------------------------------------------------------------------------

BOTTOM_LINES = 15

KINDS = ("session", "five-hour", "weekly", "opus-weekly", "extra-usage", "unknown")

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

_LEAD = re.compile(r"\s*(?:⎿\s*)?")
# Every notice, menu line and API error contains one of these: most lines stop at this test.
_HINTS = ("limit", "usage", "error")

_QUAL = r"(?:opus|sonnet|weekly|session|daily|5[- ]?hour|five[- ]hour|5h)"
_HEAD = re.compile(
    rf"(?P<claude>claude\s+)?(?:ai\s+)?(?P<q1>(?:{_QUAL}\s+)*)(?P<usage>usage\s+)?limit\s+reached"
    rf"|you(?:['’]ve|\s+have)\s+(?:hit|reached|exceeded)\s+your\s+(?P<q2>(?:{_QUAL}\s+)*)"
    r"(?:usage\s+)?limit"
    r"|you(?:['’]re|\s+are)\s+out\s+of\s+(?P<extra>extra\s+)?usage",
    re.IGNORECASE)
_EPOCH = re.compile(r"\s*\|\s*(?P<epoch>\d{9,12})\b")
_RESET = re.compile(
    r"\s*(?:[.,:;·∙•|–—-]\s*)?"
    r"(?:your\s+limit\s+will\s+reset|will\s+reset|resets?)(?:\s+(?:at|on))?\s+"
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s*"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?,?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>[0-5]\d))?\s*(?P<ampm>[ap]\.?m\b\.?)?"
    r"(?:\s*\((?P<tz>[^()\s]+)\))?",
    re.IGNORECASE)
# What may follow a parsed reset: the end, or a slash-command suggestion.
_TRAIL = re.compile(r"\s*\.?\s*(?:[·∙•|–—-]?\s*/[a-z].*)?", re.IGNORECASE)
# What may follow a notice with no readable reset ("resets in 2h", "resets" cut off by a wrap).
_BARE_TRAIL = re.compile(
    r"\s*(?:[.!]\s*)?(?:(?:[·∙•|,:;–—-]\s*)?(?:/[a-z]|(?:your\s+limit\s+will\s+)?resets?\b).*)?",
    re.IGNORECASE)
_TRANSIENT = re.compile(r"api\s+error\b.*?(?:\b429\b|\b529\b|rate.?limit|overloaded)",
                        re.IGNORECASE)
# The menu's own option, not the /rate-limit-options command: that may sit typed, unsent, in
# the prompt.
_MENU = re.compile(
    r"[\s│]*(?:[❯>›]\s*)?\d\.\s+stop\s+and\s+wait\s+for\s+(?:the\s+)?limit\s+to\s+reset\b",
    re.IGNORECASE)

# collections.namedtuple rather than typing.NamedTuple or a dataclass: those imports cost more
# start-up than this whole module, and every orch command loads it.
_Fields = namedtuple("Detection", "state kind reset tz menu line")


class Detection(_Fields):
    """What a screen says: state ok | limited | transient, and for limited the kind and reset."""

    __slots__ = ()

    def as_json(self):
        return {"state": self.state, "kind": self.kind, "reset": clock.iso(self.reset),
                "tz": self.tz, "menu": self.menu, "line": self.line}


_OK = Detection("ok", None, None, None, False, None)
_ZONES = {}
_SYSTEM_ZONES = {}


def detect(screen, now, local_tz=None):
    """Read SCREEN (tmux capture-pane -p text) at NOW (UTC epoch seconds) -> Detection.

    LOCAL_TZ (an IANA name) reads reset times when the screen names no zone; None means the
    process's local zone.
    """
    lines = screen.splitlines()
    bottom = []
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] and not lines[i].isspace():
            bottom.append(i)
            if len(bottom) == BOTTOM_LINES:
                break
    bottom.reverse()
    hinted = {i for i in bottom if _hinted(lines[i])}

    notice = transient = None
    menu = False
    used = -1
    for i in bottom:
        if i <= used or (i not in hinted and i + 1 not in hinted):
            continue
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        found = _read_notice(line, nxt)
        if found:
            notice, joined = found
            if joined:
                used = i + 1
            continue
        if _MENU.match(line):
            menu = True
            continue
        start = _LEAD.match(line).end()
        if _TRANSIENT.match(line, start):
            transient = line[start:].strip()

    if notice:
        kind, m, text = notice
        reset, tz = _reset(m, now, local_tz)
        return Detection("limited", kind, reset, tz, menu, text)
    if menu:
        return Detection("limited", "unknown", None, None, True, None)
    if transient:
        return Detection("transient", None, None, None, False, transient)
    return _OK


def _hinted(line):
    low = line.lower()
    return any(word in low for word in _HINTS)


def _read_notice(line, nxt):
    """The best reading of LINE, alone or joined to NXT -> ((kind, match, text), joined) or None."""
    start = _LEAD.match(line).end()
    body = line[start:].rstrip()
    best, best_score, joined = None, -1, False
    readings = [(body, False)]
    if nxt and not nxt.isspace():
        tail = nxt.strip()
        readings += [(body + " " + tail, True), (body + tail, True)]
    for text, is_joined in readings:
        got = _parse_notice(text)
        if got is None:
            continue
        score = _score(got[1])
        if score > best_score:
            best, best_score, joined = got, score, is_joined
    return (best, joined) if best else None


def _score(m):
    if m is None:
        return 0
    if m.re is _EPOCH:
        return 2
    return 1 + (m.group("tz") is not None)


def _parse_notice(text):
    """TEXT (a line without its lead) -> (kind, reset match or None, text) if it is a notice."""
    h = _HEAD.match(text)
    if not h:
        return None
    if h.group("q1") is not None and not (h.group("claude") or h.group("q1") or h.group("usage")):
        return None  # a bare "limit reached" says nothing about usage
    kind = _kind(h.group("q1") or h.group("q2") or "", h.group("extra"))
    pos = h.end()
    m = _EPOCH.match(text, pos)
    if m is None:
        m = _RESET.match(text, pos)
        if m is not None and not _valid_time(m):
            m = None
    if m is not None:
        return (kind, m, text) if _TRAIL.fullmatch(text, m.end()) else None
    return (kind, None, text) if _BARE_TRAIL.fullmatch(text, pos) else None


def _kind(qualifiers, extra):
    if extra:
        return "extra-usage"
    q = qualifiers.lower()
    if "week" in q:
        return "opus-weekly" if "opus" in q else "weekly"
    if "hour" in q or "5h" in q:
        return "five-hour"
    if "session" in q:
        return "session"
    return "unknown"


def _valid_time(m):
    hour = int(m.group("hour"))
    if m.group("ampm"):
        return 1 <= hour <= 12
    # Without am/pm only a 24-hour "14:30" is a time; a lone "3" may be a cut-off wrap.
    return m.group("minute") is not None and hour <= 23


def _reset(m, now, local_tz):
    """A notice's reset match -> (epoch seconds, zone name), or (None, None) when it has none."""
    if m is None:
        return None, None
    if m.re is _EPOCH:
        return float(m.group("epoch")), "UTC"
    from datetime import datetime, timedelta

    zone, name = _zone(m.group("tz"), local_tz)
    hour, minute = int(m.group("hour")), int(m.group("minute") or 0)
    ampm = (m.group("ampm") or "").lower()
    if ampm:
        hour = hour % 12 + (12 if ampm.startswith("p") else 0)

    def at(y, mo, d):
        # A naive datetime's timestamp() is the process's local time, as libc sees it.
        return datetime(y, mo, d, hour, minute, tzinfo=zone).timestamp()

    here = datetime.fromtimestamp(now, zone)
    if m.group("mon") is None:
        reset = at(here.year, here.month, here.day)
        if reset < now:
            tomorrow = here.date() + timedelta(days=1)
            reset = at(tomorrow.year, tomorrow.month, tomorrow.day)
        return reset, name
    month, day = _MONTHS.index(m.group("mon").lower()) + 1, int(m.group("day"))
    if m.group("year"):
        try:
            return at(int(m.group("year")), month, day), name
        except ValueError:
            return None, None
    for year in range(here.year, here.year + 9):  # 9 years reach the next Feb 29
        try:
            reset = at(year, month, day)
        except ValueError:
            continue
        if reset >= now:
            return reset, name
    return None, None


def _zone(named, local_tz):
    """The zone to read a reset in -> (tzinfo, or None for the process's local time; its name)."""
    for key in (named, local_tz):
        if key:
            zone = _zoneinfo(key)
            if zone is not None:
                return zone, key
    return _system_zone()


def _zoneinfo(key):
    if key not in _ZONES:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            _ZONES[key] = ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # malformed keys raise ValueError
            _ZONES[key] = None
            if key.upper() in ("UTC", "ETC/UTC"):  # a system without a tz database still has UTC
                from datetime import UTC
                _ZONES[key] = UTC
    return _ZONES[key]


def _system_zone():
    """The process's local zone as (ZoneInfo or None, name), following TZ, else /etc/localtime."""
    tz = os.environ.get("TZ")
    if tz not in _SYSTEM_ZONES:
        if tz is None:
            try:
                key = os.readlink("/etc/localtime")
            except OSError:
                key = ""
            key = key.rpartition("zoneinfo/")[2] if "zoneinfo/" in key else ""
        else:
            # An empty TZ is UTC to libc.
            key = tz.removeprefix(":").rpartition("zoneinfo/")[2] or "UTC"
        zone = _zoneinfo(key) if key else None
        # A POSIX TZ rule or a copied /etc/localtime has no IANA name: let libc do the arithmetic.
        _SYSTEM_ZONES[tz] = (zone, key) if zone is not None else (None, time.tzname[0])
    return _SYSTEM_ZONES[tz]
