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
import sys
import time
from collections import namedtuple

from . import clock, store
from .errors import OrchError

# ---------------------------------------------------------------------------------------------
# Screen detection: a pure function of the screen text, the clock and the local zone.
# ---------------------------------------------------------------------------------------------

BOTTOM_LINES = 15

KINDS = ("session", "five-hour", "weekly", "opus-weekly", "extra-usage", "credits", "spend",
         "org", "model", "unknown")

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

_LEAD = re.compile("\\s*(?:[⎿⚠]\ufe0f?\\s*)*")
# Every notice, menu line and API error contains one of these: most lines stop at this test.
_HINTS = ("limit", "usage", "error")

_QUAL = (r"(?:opus|sonnet|weekly|session|daily|5[- ]?hour|five[- ]hour|5h|monthly|spend(?:ing)?"
         r"|org(?:ani[sz]ation)?['’]s)")
# `You've reached your Opus 4.8 limit`: a model family, then up to three words of its name.
_MODEL = r"(?:opus|sonnet|haiku|claude|fable)(?:[-\s][\w.-]+){0,3}?"
_HEAD = re.compile(
    rf"(?P<claude>claude\s+)?(?:ai\s+)?(?P<q1>(?:{_QUAL}\s+)*)(?P<usage>usage\s+)?limit\s+reached"
    rf"|you(?:['’]ve|\s+have)\s+(?:hit|reached|exceeded)\s+your\s+(?P<q2>(?:{_QUAL}\s+)*)"
    r"(?:usage\s+)?limit"
    rf"|you(?:['’]ve|\s+have)\s+(?:hit|reached)\s+your\s+(?P<model>{_MODEL})\s+limit"
    r"|you(?:['’]re|\s+are)\s+out\s+of\s+(?P<extra>extra\s+)?(?P<credits>usage\s+credits|credits)"
    r"|you(?:['’]re|\s+are)\s+out\s+of\s+(?P<extra2>extra\s+)?usage"
    r"|your\s+(?P<org>org(?:ani[sz]ation)?)\s+is\s+out\s+of\s+(?:extra\s+)?(?:usage|credits)"
    r"(?:\s+credits)?",
    re.IGNORECASE)
_EPOCH = re.compile(r"\s*\|\s*(?P<epoch>\d{9,12})\b")
_RESET_WORDS = r"\s*(?:[.,:;·∙•|–—-]\s*)?(?:your\s+limit\s+will\s+reset|will\s+reset|resets?)"
# `resets in 2h 30m`, `resets in 45 minutes`: from the moment the screen is read.
_RELATIVE = re.compile(
    _RESET_WORDS + r"\s+in\s+(?P<rel>\d+\s*(?:d|h|m|s)[a-z]*(?:[\s,]*(?:and\s+)?\d+\s*(?:d|h|m|s)"
    r"[a-z]*)*)\b", re.IGNORECASE)
_ISO = re.compile(
    _RESET_WORDS + r"(?:\s+(?:at|on))?\s+"
    r"(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
    r"\s*(?P<isotz>Z|UTC|[+-]\d{2}:?\d{2})?(?:\s*\((?P<tz>[^()\s]+)\))?", re.IGNORECASE)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_RESET = re.compile(
    _RESET_WORDS + r"(?:\s+(?:at|on))?\s+"
    r"(?:(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s*"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?,?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>[0-5]\d))?\s*(?P<ampm>[ap]\.?m\b\.?)?"
    r"(?:\s*\((?P<tz>[^()\s]+)\))?",
    re.IGNORECASE)
# What may follow a parsed reset: the end, or a slash-command suggestion.
_TRAIL = re.compile(r"\s*\.?\s*(?:[·∙•|–—-]?\s*/[a-z].*)?", re.IGNORECASE)
# What may follow a notice with no readable reset: a reset cut off by a wrap, a
# slash command, or what to do about it (`· add funds to continue`).
_BARE_TRAIL = re.compile(
    r"\s*(?:[.!]\s*)?(?:(?:[·∙•|,:;–—-]\s*)?(?:/[a-z]|(?:your\s+limit\s+will\s+)?resets?\b).*"
    r"|[·∙•|–—]\s*\S.*)?",
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
    if m.re is _EPOCH or m.re is _RELATIVE:
        return 2
    if m.re is _ISO:
        return 1 + (m.group("isotz") is not None or m.group("tz") is not None)
    return 1 + (m.group("tz") is not None)


def _parse_notice(text):
    """TEXT (a line without its lead) -> (kind, reset match or None, text) if it is a notice."""
    h = _HEAD.match(text)
    if not h:
        return None
    if h.group("q1") is not None and not (h.group("claude") or h.group("q1") or h.group("usage")):
        return None  # a bare "limit reached" says nothing about usage
    kind = _kind(h)
    pos = h.end()
    m = _EPOCH.match(text, pos) or _RELATIVE.match(text, pos) or _ISO.match(text, pos)
    if m is None:
        m = _RESET.match(text, pos)
        if m is not None and not _valid_time(m):
            m = None
    if m is not None:
        return (kind, m, text) if _TRAIL.fullmatch(text, m.end()) else None
    return (kind, None, text) if _BARE_TRAIL.fullmatch(text, pos) else None


def _kind(h):
    if h.group("credits"):
        return "credits"
    if h.group("extra") or h.group("extra2"):
        return "extra-usage"
    if h.group("org"):
        return "org"
    if h.group("model"):
        return "model"
    q = (h.group("q1") or h.group("q2") or "").lower()
    if "spend" in q:
        return "spend"
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
    if m.re is _RELATIVE:
        parts = re.findall(r"(\d+)\s*([dhms])", m.group("rel").lower())
        return now + sum(int(n) * _UNITS[u] for n, u in parts), "UTC"
    from datetime import datetime, timedelta

    if m.re is _ISO:
        try:
            when = datetime.fromisoformat(m.group("iso").replace(" ", "T"))
        except ValueError:  # a month 13, say: no reset read, so the hold backs off
            return None, None
        offset = (m.group("isotz") or "").upper()
        if offset in ("Z", "UTC"):
            from datetime import UTC
            return when.replace(tzinfo=UTC).timestamp(), "UTC"
        if offset:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            from datetime import timezone
            return when.replace(tzinfo=timezone(sign * delta)).timestamp(), offset
        zone, name = _zone(m.group("tz"), local_tz)
        return when.replace(tzinfo=zone).timestamp(), name

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


# --- Account suspension -------------------------------------------------------
# Rules: an account is suspended when a window of its agents shows a limit
# notice, until the reset read from the screen plus MARGIN_S, or, when the
# screen gives no reset, for BACKOFF_MIN_S doubling to BACKOFF_MAX_S.  While
# suspended, none of its tasks is claimed (tasks.claim reads this table), so
# no exhausted window is typed into.  The windows found limited are kept; once
# the suspension has ended, each whose screen is clear again gets one resume
# message (a task, staggered by RESUME_STAGGER_S), and one still limited
# suspends the account again.  since..until stays recorded after the
# suspension ends: a task due in it was held, and is never skipped as missed.

MARGIN_S = 120.0
BACKOFF_MIN_S = 300.0
BACKOFF_MAX_S = 3600.0
RESUME_STAGGER_S = 5.0
RESUME_NOTE = "Usage limit has reset. Please continue where you left off."


def suspend(conn, account, detection, server=None, pane=None, target=None, now=None,
            how=None):
    """Record that ACCOUNT is out of credits (call inside a transaction); return until."""
    now = clock.now() if now is None else now
    row = conn.execute("SELECT * FROM accounts WHERE name = ?", (account,)).fetchone()
    backoff = None
    if detection.reset is not None and detection.reset + MARGIN_S > now + 60:
        until = detection.reset + MARGIN_S
    else:
        # No reset time, or the notice outlived it: back off, doubling.
        previous = row["backoff_s"] if row is not None and row["state"] == "suspended" else None
        backoff = min(previous * 2, BACKOFF_MAX_S) if previous else BACKOFF_MIN_S
        until = now + backoff
    since = row["since"] if row is not None and row["state"] == "suspended" else now
    conn.execute(
        "INSERT INTO accounts (name, state, since, until, reset, kind, how, backoff_s, updated) "
        "VALUES (:name, 'suspended', :since, :until, :reset, :kind, :how, :backoff, :now) "
        "ON CONFLICT(name) DO UPDATE SET state = 'suspended', since = :since, until = :until, "
        "reset = :reset, kind = :kind, how = :how, backoff_s = :backoff, updated = :now",
        {"name": account, "since": since, "until": until, "reset": detection.reset,
         "kind": detection.kind, "how": how or f"screen of {target}", "backoff": backoff,
         "now": now})
    if pane is not None:
        conn.execute("INSERT INTO limited_panes (account, server, pane, target, seen) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT(account, server, pane) DO UPDATE SET "
                     "state = 'waiting', target = excluded.target, seen = excluded.seen",
                     (account, server, pane, target, now))
    return until


def set_until(conn, account, until, resume_note=None, now=None):
    """A suspension learned elsewhere (orch-sched limits set)."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        conn.execute(
            "INSERT INTO accounts (name, state, since, until, how, resume_note, updated) "
            "VALUES (:name, 'suspended', :now, :until, 'set by hand', :note, :now) "
            "ON CONFLICT(name) DO UPDATE SET state = 'suspended', since = :now, until = :until, "
            "reset = NULL, kind = NULL, how = 'set by hand', backoff_s = NULL, "
            "resume_note = COALESCE(:note, resume_note), updated = :now",
            {"name": account, "until": until, "note": resume_note, "now": now})


def clear(conn, account, now=None):
    """Lift a suspension by hand; False if ACCOUNT is not suspended."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        cur = conn.execute("UPDATE accounts SET state = 'ok', until = ?, backoff_s = NULL, "
                           "updated = ? WHERE name = ? AND state = 'suspended'",
                           (now, now, account))
        conn.execute("DELETE FROM limited_panes WHERE account = ?", (account,))
    return cur.rowcount > 0


def listing(conn, include_ok=False):
    """Accounts (suspended ones, or all) with the windows involved."""
    where = "" if include_ok else "WHERE state = 'suspended'"
    accounts = conn.execute(f"SELECT * FROM accounts {where} ORDER BY name").fetchall()
    panes = {}
    for p in conn.execute("SELECT * FROM limited_panes ORDER BY target"):
        panes.setdefault(p["account"], []).append(p)
    return [(a, panes.get(a["name"], [])) for a in accounts]


def resume_due(conn, capture, now=None):
    """Handle every suspension that has ended (call from a delivery pass).

    CAPTURE(server, pane) returns a pane's screen (or raises).  A clear window
    gets one resume task, a limited one suspends its account again; an account
    none of whose windows is still waiting becomes ok.  Returns the ids of the
    resume tasks added.
    """
    from . import tasks
    now = clock.now() if now is None else now
    added = []
    ended = conn.execute("SELECT * FROM accounts WHERE state = 'suspended' AND until <= ?",
                         (now,)).fetchall()
    for account in ended:
        name = account["name"]
        waiting = conn.execute("SELECT * FROM limited_panes WHERE account = ? AND "
                               "state = 'waiting' ORDER BY target", (name,)).fetchall()
        note = account["resume_note"] or os.environ.get("ORCH_RESUME_NOTE") or RESUME_NOTE
        if not note.strip() or tasks.note_problem(note):
            note = RESUME_NOTE  # an ORCH_RESUME_NOTE that could not be typed (add refuses it)
        stagger, failed = 0, False
        for pane in waiting:
            try:
                screen = capture(pane["server"], pane["pane"])
            except Exception:  # noqa: BLE001 - the window is gone: nothing to resume
                screen = None
            seen = detect(screen, now) if screen is not None else None
            with store.tx(conn):
                if seen is not None and seen.state == "limited":
                    suspend(conn, name, seen, pane["server"], pane["pane"], pane["target"], now)
                    break
                # Taken only if still waiting: of two passes racing here, one resumes it.
                taken = conn.execute("UPDATE limited_panes SET state = 'resumed' WHERE "
                                     "account = ? AND server = ? AND pane = ? AND "
                                     "state = 'waiting'",
                                     (name, pane["server"], pane["pane"])).rowcount
            if taken and seen is not None:
                # This window's turn; the resume message is due just before it, so
                # that it comes first, and the check-ins it held right after.
                at = now + stagger * RESUME_STAGGER_S
                try:
                    added.append(_resume(conn, tasks, name, pane, note, at))
                except OrchError as e:  # this window only: the pass goes on, a later one retries
                    print(f"orch-sched: warning: resuming {pane['target']} after the "
                          f"{name} limit: {e}", file=sys.stderr)
                    with store.tx(conn):
                        conn.execute("UPDATE limited_panes SET state = 'waiting' WHERE "
                                     "account = ? AND server = ? AND pane = ?",
                                     (name, pane["server"], pane["pane"]))
                    failed = True
                    continue
                stagger += 1
        else:
            if failed:
                continue  # the account stays held until every window is resumed
            with store.tx(conn):
                conn.execute("UPDATE accounts SET state = 'ok', backoff_s = NULL, updated = ? "
                             "WHERE name = ? AND state = 'suspended' AND until <= ?",
                             (now, name, now))
                conn.execute("DELETE FROM limited_panes WHERE account = ? AND "
                             "state = 'resumed'", (name,))
    return added


def _resume(conn, tasks, account, pane, note, at):
    """Add PANE's resume message at AT, and put what its account held right after it."""
    task = tasks.add(conn, pane["pane"], pane["server"], note, at - 0.5, account=account,
                     key=f"resume:{account}:{pane['server']}:{pane['pane']}")
    with store.tx(conn):
        conn.execute("UPDATE tasks SET not_before = ? WHERE account = ? AND status = 'pending' "
                     "AND server = ? AND target IN (?, ?) AND not_before < ? AND id != ?",
                     (at, account, pane["server"], pane["target"], pane["pane"], at, task))
    return task


def account_json(account, panes, now=None):
    now = clock.now() if now is None else now
    return {"account": account["name"], "state": account["state"],
            "until": clock.iso(account["until"]), "reset": clock.iso(account["reset"]),
            "left_s": max(0, round(account["until"] - now)) if account["until"] else None,
            "kind": account["kind"], "how": account["how"],
            "windows": [p["target"] for p in panes]}
