"""The dashboard: check-ins, limits, orchestrations, locks and sync in one view.

Rules:
- Everything is read through the other tools' domain modules (tasks, limits,
  orchestrations, locks, worktrees); nothing here knows their tables.  No git
  command ever runs.  tmux is asked once per server, by orchestrations.listing
  (which sessions still exist), and never by the status line.
- One snapshot (gather) feeds every view -- text, porcelain, JSON, HTML -- so
  they cannot disagree.  Inside it times are epoch seconds; as_json turns them
  into ISO 8601 UTC strings.
- What needs attention (exit 1) is decided in reasons() alone: an attempt
  logged 'failed' in the last 24 h, an overdue check-in (tasks.overdue, as
  `orch-sched status` says), live check-ins with no scheduler daemon running,
  a worktree whose last pass found a conflict with the base.  A suspended
  account is shown with its countdown but is normal.
- Rows come in a stable order (targets, names and paths sorted; failures and
  late check-ins by time) and times are shown to the minute, so that
  `watch -d` highlights real changes only.
- A project P owns a name when the name's slug (orchestrations.slug) is P's
  slug or starts with it followed by '-': the session of a check-in's target,
  a lock name, a repository's directory name.  P's orchestrations are those
  registered for a project with P's slug; its limits are the accounts of its
  check-ins and of limited windows in its sessions.
- Locks are read from their holder records (locks.recorded), never from
  /proc/locks, whose first read in a process can wait for an RCU grace period
  (10-20 ms): a holder that writes no record is not shown.  The daemons' own
  locks are shown as the state of their sections instead.
- The status line (line()) reads the same functions minus the tmux and limits
  ones, and imports nothing it can avoid: it runs on every tmux refresh.
"""

import os
import time

from . import clock, locks, store, tasks
from .errors import OrchError
from .text import porcelain_field, table_lines, text_width, truncate

VERSION = 1
DAY = 86400.0
TIME_KEYS = {"generated", "due", "not_before", "at", "until", "reset", "created", "ended",
             "since", "last_pass", "last_event", "last_sync", "checked", "first_seen",
             "last_seen"}
REFRESH_S = 10
# The status line's marks: pending check-ins, needs attention, locks, sync.
LINE_SYMBOLS = ("⏰", "⚠", "🔒", "⇅")
LINE_ASCII = ("chk", "!", "lck", "sync:")


# --- projects -------------------------------------------------------------------

def owner(project):
    """A predicate telling whether a name belongs to PROJECT (None: everything does)."""
    if project is None:
        return None
    from .orchestrations import slug
    mine = slug(project)  # raises (exit 65) for a project name with nothing to slug

    def owns(name):
        try:
            theirs = slug(name)
        except OrchError:
            return False
        return theirs == mine or theirs.startswith(mine + "-")
    return owns


def session_of(target):
    """The session a tmux target names ('' for a pane id, which names none)."""
    if target.startswith("%"):
        return ""
    return target.partition(":")[0].partition(".")[0]


def repo_owned(owns, repo, trees):
    """Whether OWNS owns a recorded repository: by its directory's name, or because
    one of its worktrees is mapped to a tmux target in one of the project's sessions."""
    if owns is None or owns(os.path.basename(repo["top"].rstrip("/"))):
        return True
    return any(w["repo"] == repo["repo"] and w["target"] and owns(session_of(w["target"]))
               for w in trees)


# --- attention --------------------------------------------------------------------

def reasons(failed, late, pending, scheduler, trees, now, waits=(), blind=()):
    """What needs attention, as dicts {kind, section, text}: the one rule for exit 1.

    WAITS are check-ins deferred for longer than their grace (tasks.waiting);
    BLIND the accounts held at a usage limit whose notice gave no reset time
    (blind_holds): each waits for a person.
    """
    out = []
    for a in failed:
        out.append({"kind": "failed", "section": "checkins",
                    "text": f"check-in {a['task_id']} for {a['target']} failed "
                            f"{_ago(now - a['at'])} ago: {a['detail'] or 'gave up'}"})
    for t in late:
        out.append({"kind": "late", "section": "checkins",
                    "text": f"check-in {t['id']} for {t['target']} is overdue by "
                            f"{_ago(now - t['due'])}"})
    for t in waits:
        out.append({"kind": "waiting", "section": "checkins",
                    "text": f"check-in {t['id']} for {t['target']} has waited "
                            f"{_ago(now - t['deferred_since'])}: {t['reason']}"})
    for a in blind:
        out.append({"kind": "limit", "section": "limits",
                    "text": f"account {a['name']} is held at a usage limit with no reset time "
                            f"shown ({a['how']}): it may need a person"})
    if pending and not scheduler:
        out.append({"kind": "unscheduled", "section": "checkins",
                    "text": f"{pending} check-in{'s' if pending != 1 else ''} pending and "
                            "no orch-sched daemon running"})
    for w in trees:
        if w["state"] == "conflict":
            out.append({"kind": "conflict", "section": "sync",
                        "text": f"{w['path']} ({w['branch'] or 'detached'}) would conflict "
                                f"with {w['base'] or 'the base'} in {', '.join(w['files'])}"})
    return out


def limited_targets(conn, account):
    return [r[0] for r in conn.execute("SELECT target FROM limited_panes WHERE account = ?",
                                       (account,))]


def next_state(x):
    """The word for a pending check-in's row: running, held, deferred, retry or next."""
    return ("running" if x["status"] == "running" else "held" if x["held"]
            else "deferred" if x["deferred"] else "retry" if x["attempts"] else "next")


def blind_holds(conn, now):
    """Accounts suspended from a screen whose notice showed no reset time."""
    return conn.execute("SELECT * FROM accounts WHERE state = 'suspended' AND until > ? AND "
                        "reset IS NULL AND how != 'set by hand' ORDER BY name",
                        (now,)).fetchall()


# --- gathering --------------------------------------------------------------------

def gather(conn, project=None, now=None):
    """One snapshot of every section (times as epoch seconds)."""
    from . import limits, sync
    from .sync import view
    now = clock.now() if now is None else now
    owns = owner(project)
    errors = []

    def mine(target):
        return owns is None or owns(session_of(target))

    # Check-ins
    nexts = [(t, n) for t, n in tasks.next_per_target(conn) if mine(t["target"])]
    late = [t for t in tasks.overdue(conn, now) if mine(t["target"])]
    waits = [t for t in tasks.waiting(conn, now) if mine(t["target"])]
    failed = [a for a in tasks.failures(conn, now - DAY) if mine(a["target"])]
    holder = locks.read_holder(tasks.DAEMON_LOCK)
    last = store.get_meta(conn, "daemon.last_pass")
    accounts = limits.listing(conn)
    held = {a["name"] for a, _ in accounts if a["until"] is not None and a["until"] > now}
    overdue = {t["id"] for t in late}
    pending = sum(n for _, n in nexts)
    checkins = {
        "pending": pending,
        "daemon": {"running": holder is not None, "pid": holder and holder.get("pid"),
                   "last_pass": float(last) if last else None},
        "next": [{"id": t["id"], "target": t["target"], "server": t["server"], "due": t["due"],
                  "not_before": t["not_before"], "status": t["status"],
                  "late": t["id"] in overdue, "held": t["account"] in held,
                  "attempts": t["attempts"], "account": t["account"], "every_s": t["every_s"],
                  "note": t["note"], "count": n, "deferred": t["deferred"]} for t, n in nexts],
        "waiting": [{"id": t["id"], "target": t["target"], "deferred": t["deferred"],
                     "since": t["deferred_since"], "reason": t["reason"]} for t in waits],
        # the last 24 h of attempts by outcome: delivered (seen submitted) apart from sent
        # (keys sent, unconfirmed), recovered, unsubmitted, deferred...
        "outcomes": tasks.outcomes(conn, now - DAY, mine),
        "late": [{"id": t["id"], "target": t["target"], "due": t["due"],
                  "late_s": round(now - t["due"]), "account": t["account"],
                  "every_s": t["every_s"], "note": t["note"]} for t in late],
        "failed": [{"id": a["task_id"], "target": a["target"], "at": a["at"], "due": a["due"],
                    "detail": a["detail"]} for a in failed],
    }

    # Limits: the suspended accounts (for a project: those of its check-ins and windows)
    theirs = {t["account"] for t, _ in nexts} | {t["account"] for t in late}
    limit_rows = [dict(limits.account_json(a, panes, now), until=a["until"], reset=a["reset"])
                  for a, panes in accounts
                  if owns is None or a["name"] in theirs
                  or any(mine(p["target"]) for p in panes)]

    # Orchestrations (tmux says which are active)
    from . import orchestrations
    orchs = []
    try:
        found = orchestrations.listing(conn)
    except OrchError as e:  # tmux is not installed: the rest of the view still stands
        errors.append({"section": "orchestrations", "text": str(e)})
        found = []
    wanted_slug = None if project is None else orchestrations.slug(project)
    for o in found:
        if wanted_slug is not None and orchestrations.slug(o["project"]) != wanted_slug:
            continue
        orchs.append(dict(orchestrations.as_json(o), created=o["created"], ended=o["ended"],
                          age_s=max(0, round(now - o["created"]))))

    # Locks: every holder but the daemons', which their own sections show
    hidden = {tasks.DAEMON_LOCK, sync.DAEMON_LOCK}
    held_locks = []
    for r in locks.recorded():
        if r["name"] in hidden or (owns is not None and not owns(r["name"])):
            continue
        since = r.get("since")
        held_locks.append({"name": r["name"], "pid": r.get("pid"), "host": r.get("host"),
                           "since": since, "age_s": None if since is None else
                           max(0, round(now - since)), "command": r.get("command"),
                           "note": r.get("note")})

    # Sync: what the last passes recorded (no git)
    every = view.recorded_status(conn)
    repos = [r for r in view.recorded_repos(conn) if repo_owned(owns, r, every)]
    wanted = {r["repo"] for r in repos}
    trees = [w for w in every if w["repo"] in wanted]
    pairs = [c for c in view.recorded_conflicts(conn) if c["repo"] in wanted]
    sync_repos = []
    for r in repos:
        sync_repos.append({
            "repo": r["top"], "git_dir": r["repo"], "base": r["base"], "policy": r["policy"],
            "hooks": r["hooks"] is not None, "last_pass": r["last_pass"],
            "last_event": r["last_event"], "error": r["error"],
            "worktrees": [{k: w[k] for k in ("path", "branch", "head", "ahead", "behind",
                                              "dirty", "state", "reason", "files", "action",
                                              "target", "checked", "last_sync")}
                          for w in trees if w["repo"] == r["repo"]],
            "conflicts": [{k: c[k] for k in ("a", "b", "a_worktree", "b_worktree", "files",
                                              "first_seen", "last_seen")}
                          for c in pairs if c["repo"] == r["repo"]],
        })
    sync_pid = view.daemon_pid()

    return {
        "version": VERSION, "generated": now, "project": project,
        "attention": reasons(failed, late, pending, holder is not None, trees, now, waits,
                             [a for a in blind_holds(conn, now) if a["name"] in
                              {r["account"] for r in limit_rows}]),
        "errors": errors,
        "checkins": checkins,
        "limits": limit_rows,
        "orchestrations": orchs,
        "locks": held_locks,
        "sync": {"daemon": {"running": sync_pid is not None, "pid": sync_pid},
                 "repos": sync_repos},
    }


def as_json(snap):
    """SNAP with every time as an ISO 8601 UTC string (the --json object)."""
    def convert(value, key=None):
        if isinstance(value, dict):
            return {k: convert(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if key in TIME_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            return clock.iso(value)
        return value
    return convert(snap)


def json_text(snap):
    import json
    return json.dumps(as_json(snap), ensure_ascii=False, indent=2) + "\n"


# --- porcelain --------------------------------------------------------------------

def records(snap):
    """The porcelain records: tuples whose first field is the section (see orch-dash(1))."""
    iso = clock.iso
    out = [("attention", r["kind"], r["section"], r["text"]) for r in snap["attention"]]
    out += [(e["section"], "error", e["text"]) for e in snap["errors"]]
    c = snap["checkins"]
    d = c["daemon"]
    out.append(("checkins", "daemon", "running" if d["running"] else "stopped", d["pid"],
                c["pending"], iso(d["last_pass"])))
    out += [("checkins", "next", t["id"], t["target"], iso(t["due"]), t["status"],
             int(t["late"]), int(t["held"]), t["count"], t["account"], t["note"])
            for t in c["next"]]
    out += [("checkins", "late", t["id"], t["target"], iso(t["due"]), t["late_s"],
             t["account"], t["note"]) for t in c["late"]]
    out += [("checkins", "failed", a["id"], a["target"], iso(a["at"]), a["detail"])
            for a in c["failed"]]
    out += [("limits", a["state"], a["account"], iso(a["until"]), a["left_s"], a["kind"],
             ",".join(a["windows"]), a["how"]) for a in snap["limits"]]
    out += [("orchestrations", o["state"], o["session"], o["project"], iso(o["created"]),
             o["age_s"], o["dir"]) for o in snap["orchestrations"]]
    out += [("locks", "held", h["name"], h["pid"], iso(h["since"]), h["age_s"], h["note"],
             h["command"]) for h in snap["locks"]]
    s = snap["sync"]
    out.append(("sync", "daemon", "running" if s["daemon"]["running"] else "stopped",
                s["daemon"]["pid"]))
    for r in s["repos"]:
        out.append(("sync", "repo", r["repo"], r["base"], r["policy"], int(r["hooks"]),
                    iso(r["last_pass"]), r["error"]))
        out += [("sync", "worktree", r["repo"], w["path"], w["branch"], w["ahead"],
                 w["behind"], None if w["dirty"] is None else int(w["dirty"]), w["state"],
                 iso(w["last_sync"]), _detail(w)) for w in r["worktrees"]]
        out += [("sync", "conflict", r["repo"], p["a"], p["b"], p["a_worktree"],
                 p["b_worktree"], ", ".join(p["files"])) for p in r["conflicts"]]
    return out


def porcelain_text(snap):
    field = porcelain_field
    return "".join("\t".join(field(v) for v in rec) + "\n" for rec in records(snap))


def _detail(w):
    return ", ".join(w["files"]) if w["state"] == "conflict" else w["reason"]


# --- text for people ----------------------------------------------------------------

RED, YELLOW, GREEN, BOLD, DIM, RESET = ("\033[31m", "\033[33m", "\033[32m", "\033[1m",
                                        "\033[2m", "\033[0m")


def _ago(secs):
    """A span to the minute (seconds would change on every refresh)."""
    secs = abs(secs)
    return "<1m" if secs < 60 else clock.fmt_duration(secs - secs % 60)


def _clock(ts, now):
    """'14:05' on the same local day as NOW, else '11-26 14:05'."""
    if ts is None:
        return "-"
    t, n = time.localtime(ts), time.localtime(now)
    return time.strftime("%H:%M" if t[:3] == n[:3] else "%m-%d %H:%M", t)


def _when(ts, now):
    if ts is None:
        return "-"
    rel = f"in {_ago(ts - now)}" if ts > now else f"{_ago(now - ts)} ago"
    return f"{_clock(ts, now)} {rel}"


def _plural(n, word, plural=None):
    return f"{n} {word if n == 1 else plural or word + 's'}"


def summary(snap):
    """'all well', or what needs attention, counted by kind."""
    if not snap["attention"]:
        return "all well"
    counts = {}
    for r in snap["attention"]:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    words = {"failed": "failed", "late": "late", "conflict": "in conflict"}
    parts = [f"{n} {words[k]}" if k in words else "no scheduler" for k, n in counts.items()]
    return "needs attention: " + ", ".join(parts)


def _table(rows, headers, width):
    return list(table_lines(rows, headers, width))


def clip(line, width):
    """LINE cut to WIDTH terminal columns (with an ellipsis)."""
    if text_width(line) <= width:
        return line
    out, used = [], 0
    for ch in line:
        w = text_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def sections_text(snap, width=80):
    """The human view as (line, style) pairs; style None, 'bad', 'warn', 'ok' or 'head'."""
    from .sync.view import state_text
    now = snap["generated"]
    t = truncate
    out = []
    title = f"orch-dash  {clock.local(now)[:16]}"
    if snap["project"]:
        title += f"  project {snap['project']}"
    out.append((title, "head"))
    out.append((summary(snap), "bad" if snap["attention"] else "ok"))
    errors = {e["section"]: e["text"] for e in snap["errors"]}

    def section(heading, rows, headers, styles, empty):
        out.append(("", None))
        out.append((heading, "head"))
        if rows:
            lines = _table(rows, headers, width - 2)
            out.append(("  " + lines[0], "dim"))
            out.extend(("  " + line, style) for line, style in zip(lines[1:], styles,
                                                                     strict=True))
        elif empty:
            out.append((f"  {empty}", "dim"))

    c = snap["checkins"]
    d = c["daemon"]
    sched = (f"scheduler running (pid {d['pid']})" if d["running"]
             else "scheduler not running")
    if d["last_pass"]:
        sched += f", last pass {_clock(d['last_pass'], now)}"
    rows, styles = [], []
    for a in c["failed"]:
        rows.append(("failed", t(a["target"], 16), a["id"], t(_when(a["at"], now), 20), "",
                     a["detail"] or "gave up"))
        styles.append("bad")
    for x in c["late"]:
        rows.append(("late", t(x["target"], 16), x["id"], t(_when(x["due"], now), 20), "",
                     x["note"]))
        styles.append("bad")
    for x in c["next"]:
        if x["late"]:  # listed above
            continue
        state = next_state(x)
        rows.append((state, t(x["target"], 16), x["id"], t(_when(x["due"], now), 20),
                     x["count"], x["note"]))
        styles.append("warn" if state in ("held", "deferred") else None)
    heading = f"Check-ins: {c['pending']} pending, {sched}"
    late_failed = ", ".join(f"{len(c[k])} {k}" for k in ("late", "failed") if c[k])
    if late_failed:
        heading += f"; {late_failed}"
    done = c["outcomes"]
    # (sent: its keys went in, but no screen showed it submitted)
    words = {"sent": "unconfirmed"}
    if any(done.get(k) for k in (*tasks.DELIVERED, "unsubmitted")):
        heading += "; 24 h: " + ", ".join(f"{done[k]} {words.get(k, k)}" for k in
                                          (*tasks.DELIVERED, "unsubmitted") if done.get(k))
    section(heading, rows, ["STATE", "TARGET", "ID", "WHEN", "#", "NOTE"], styles,
            "nothing scheduled")

    lim = snap["limits"]
    rows = [(t(a["account"], 16), _clock(a["until"], now), _ago(a["left_s"] or 0),
             t(a["kind"] or "", 11), ",".join(a["windows"]) or a["how"] or "") for a in lim]
    section(f"Limits: {_plural(len(lim), 'account')} suspended" if lim
            else "Limits: no account suspended",
            rows, ["ACCOUNT", "UNTIL", "LEFT", "KIND", "WINDOWS"], ["warn"] * len(rows), None)

    orchs = snap["orchestrations"]
    rows = [(t(o["session"], 32), _ago(o["age_s"]), _clock(o["created"], now), o["project"])
            for o in orchs]
    heading = (f"Orchestrations: {len(orchs)} active" if "orchestrations" not in errors
               else f"Orchestrations: unknown ({errors['orchestrations']})")
    section(heading, rows, ["SESSION", "AGE", "SINCE", "PROJECT"], [None] * len(rows), None)

    held = snap["locks"]
    rows = [(t(h["name"], 24), h["pid"] or "?", "?" if h["age_s"] is None else _ago(h["age_s"]),
             t(h["note"] or "", 20), h["command"] or "") for h in held]
    section(f"Locks: {len(held)} held" if held else "Locks: none held", rows,
            ["NAME", "PID", "AGE", "NOTE", "COMMAND"], [None] * len(rows), None)

    s = snap["sync"]
    trees = [w for r in s["repos"] for w in r["worktrees"]]
    n_conf = sum(1 for w in trees if w["state"] == "conflict")
    heading = (f"Sync: {_plural(len(s['repos']), 'repository', 'repositories')}, "
               f"{_plural(len(trees), 'worktree')}")
    if n_conf:
        heading += f", {n_conf} in conflict"
    heading += (f"; daemon running (pid {s['daemon']['pid']})" if s["daemon"]["running"]
                else "; daemon not running")
    section(heading, [], [], [], None if s["repos"] else "no repository recorded")
    for r in s["repos"]:
        info = (f"  {t(r['repo'], 40)}  base {r['base'] or '?'}, last pass "
                f"{_clock(r['last_pass'], now) if r['last_pass'] else 'never'}")
        if not r["hooks"]:
            info += ", hooks not installed"
        out.append((info, None))
        if r["error"]:
            out.append((f"    error: {r['error']}", "bad"))
        rows, styles = [], []
        for w in r["worktrees"]:
            ab = "" if w["ahead"] is None else f"+{w['ahead']} -{w['behind']}"
            rows.append((t(os.path.basename(w["path"].rstrip("/")), 16),
                         t(w["branch"] or "-", 16), ab,
                         {True: "dirty", False: "", None: "?"}[w["dirty"]],
                         _clock(w["last_sync"], now), state_text(w)))
            styles.append("bad" if w["state"] == "conflict" else
                          "warn" if w["state"] == "skipped" else None)
        for p in r["conflicts"]:
            if p["b_worktree"] is None:  # against the base: the worktree row says so
                continue
            rows.append((t(os.path.basename((p["a_worktree"] or p["a"]).rstrip("/")), 16),
                         t(p["a"], 16), "", "", "",
                         f"would conflict with {p['b']}: {', '.join(p['files'])}"))
            styles.append("warn")
        if rows:
            lines = _table(rows, ["WORKTREE", "BRANCH", "+/-", "DIRTY", "SYNCED", "STATE"],
                           width - 4)
            out.append(("    " + lines[0], "dim"))
            out.extend(("    " + line, style) for line, style in zip(lines[1:], styles,
                                                                       strict=True))
    return out


_STYLES = {"bad": RED, "warn": YELLOW, "ok": GREEN, "head": BOLD, "dim": DIM}


def text(snap, width=80, colour=False):
    """The human view: every line at most WIDTH columns; colour only if asked."""
    lines = []
    for line, style in sections_text(snap, width):
        line = clip(line, width)
        if colour and style and line:
            line = f"{_STYLES[style]}{line}{RESET}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# --- the status line --------------------------------------------------------------

def line(conn, ascii=False, project=None, now=None):
    """One short line for tmux's status-right, and whether anything needs attention."""
    from . import sync
    from .sync import view
    now = clock.now() if now is None else now
    owns = owner(project)

    def mine(target):
        return owns is None or owns(session_of(target))

    pending = (tasks.live_total(conn) if owns is None else
               sum(n for target, _, n in tasks.live_per_target(conn) if mine(target)))
    late = [t for t in tasks.overdue(conn, now) if mine(t["target"])]
    waits = [t for t in tasks.waiting(conn, now) if mine(t["target"])]
    blind = [a for a in blind_holds(conn, now) if owns is None or any(
        mine(t) for t in limited_targets(conn, a["name"]))]
    failed = [a for a in tasks.failures(conn, now - DAY) if mine(a["target"])]
    scheduler = locks.read_holder(tasks.DAEMON_LOCK) is not None
    every = view.recorded_status(conn)
    repos = {r["repo"] for r in view.recorded_repos(conn) if repo_owned(owns, r, every)}
    trees = [w for w in every if w["repo"] in repos]
    hidden = {tasks.DAEMON_LOCK, sync.DAEMON_LOCK}
    n_locks = sum(1 for r in locks.recorded() if r["name"] not in hidden
                  and (owns is None or owns(r["name"])))
    attention = reasons(failed, late, pending, scheduler, trees, now, waits, blind)
    n_conf = sum(1 for w in trees if w["state"] == "conflict")
    sync_mark = ("" if not repos else "ok" if not n_conf else f"{n_conf}!")
    check_ins, alarm, lock, synced = LINE_ASCII if ascii else LINE_SYMBOLS
    parts = [f"{check_ins}{pending}"]
    if attention:
        parts.append(f"{alarm}{len(attention)}")
    if n_locks:
        parts.append(f"{lock}{n_locks}")
    if sync_mark:
        parts.append(f"{synced}{sync_mark}")
    return " ".join(parts), bool(attention)


# --- HTML -------------------------------------------------------------------------

def _esc(value):
    text = "" if value is None else str(value)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


_CSS = """
:root{--bg:#fff;--fg:#1b1f24;--mute:#5b6570;--line:#d8dde3;--bad:#b42318;--badbg:#fde8e6;
--warn:#8a5a00;--warnbg:#fff4d6;--ok:#1a7f37;--okbg:#e6f4ea;--head:#f3f5f7}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e9ec;--mute:#9aa4ae;
--line:#2c333a;--bad:#ff8a80;--badbg:#3b1714;--warn:#ffcc66;--warnbg:#3a2e0f;--ok:#7ee2a0;
--okbg:#12321e;--head:#1a1f25}}
*{box-sizing:border-box}
body{margin:0;padding:12px;background:var(--bg);color:var(--fg);
font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:12px 14px;border-radius:10px;margin-bottom:14px}
header.bad{background:var(--badbg);color:var(--bad)}
header.ok{background:var(--okbg);color:var(--ok)}
h1{font-size:20px;margin:0 0 4px}
header p{margin:2px 0}
header ul{margin:6px 0 0;padding-left:20px}
.meta{color:var(--mute);font-size:13px}
section{margin:0 0 18px}
h2{font-size:17px;margin:0 0 2px}
h3{font-size:15px;margin:10px 0 2px;word-break:break-all}
.sub{color:var(--mute);font-size:13px;margin:0 0 6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-weight:600;color:var(--mute);background:var(--head)}
th,td{padding:5px 6px;border-bottom:1px solid var(--line);vertical-align:top}
td{overflow-wrap:anywhere}
small{color:var(--mute);font-size:12px}
tr.bad td{background:var(--badbg)}
tr.warn td{background:var(--warnbg)}
.tag{font-size:12px;font-weight:700;white-space:nowrap;text-transform:uppercase}
tr.bad .tag{color:var(--bad)}
tr.warn .tag{color:var(--warn)}
.empty{color:var(--mute);font-size:14px;margin:4px 0}
"""


def html(snap, refresh=REFRESH_S):
    """A self-contained page: inline style, no script, no external asset; reloads itself."""
    now = snap["generated"]
    bad = bool(snap["attention"])
    parts = []
    add = parts.append
    title = f"orch-dash: {summary(snap)}"
    add("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta http-equiv=\"refresh\" content=\"{int(refresh)}\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>")
    add(f"<header class=\"{'bad' if bad else 'ok'}\"><h1>{_esc(summary(snap))}</h1>")
    if bad:
        add("<ul>" + "".join(f"<li>{_esc(r['text'])}</li>" for r in snap["attention"])
            + "</ul>")
    meta = f"orch-dash · {clock.local(now)}"
    if snap["project"]:
        meta += f" · project {snap['project']}"
    add(f"<p class=\"meta\">{_esc(meta)} · refreshes every {int(refresh)} s</p></header>")
    errors = {e["section"]: e["text"] for e in snap["errors"]}

    def table(headers, rows, empty):
        """Rows of (style, cells); a cell is text or (text, smaller second line); a
        table whose first column is the state shows it as a tag."""
        if not rows:
            return f"<p class=\"empty\">{_esc(empty)}</p>" if empty else ""
        head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
        body = []
        for style, cells in rows:
            tds = []
            for i, cell in enumerate(cells):
                if isinstance(cell, tuple):
                    inner = f"{_esc(cell[0])}<br><small>{_esc(cell[1])}</small>"
                elif i == 0 and headers[0] == "state":
                    inner = f"<span class=\"tag\">{_esc(cell)}</span>"
                else:
                    inner = _esc(cell)
                tds.append(f"<td>{inner}</td>")
            body.append(f"<tr class=\"{style or ''}\">{''.join(tds)}</tr>")
        return (f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def section(ident, heading, sub, inner):
        add(f"<section id=\"{ident}\"><h2>{_esc(heading)}</h2>"
            f"<p class=\"sub\">{_esc(sub)}</p>{inner}</section>")

    c = snap["checkins"]
    d = c["daemon"]
    sub = (f"{c['pending']} pending · scheduler "
           + (f"running (pid {d['pid']})" if d["running"] else "not running"))
    if d["last_pass"]:
        sub += f" · last pass {_clock(d['last_pass'], now)}"
    rows = [("bad", ("failed", a["target"], _when(a["at"], now), a["detail"] or "gave up"))
            for a in c["failed"]]
    rows += [("bad", ("late", x["target"], _when(x["due"], now), x["note"])) for x in c["late"]]
    for x in c["next"]:
        if x["late"]:
            continue
        state = next_state(x)
        more = f" (+{x['count'] - 1} more)" if x["count"] > 1 else ""
        rows.append(("warn" if state in ("held", "deferred") else None,
                     (state, x["target"], _when(x["due"], now), x["note"] + more)))
    section("checkins", "Check-ins", sub,
            table(["state", "target", "when", "note"], rows, "Nothing scheduled."))

    lim = snap["limits"]
    rows = [("warn", (a["account"],
                      f"{_ago(a['left_s'] or 0)} left"
                      + (f" (until {_clock(a['until'], now)})" if a["until"] else ""),
                      ", ".join(a["windows"]) or a["how"] or "")) for a in lim]
    section("limits", "Limits", f"{_plural(len(lim), 'account')} suspended",
            table(["account", "left", "windows"], rows, "No account suspended."))

    orchs = snap["orchestrations"]
    rows = [(None, (o["session"], o["project"], _ago(o["age_s"]), _clock(o["created"], now)))
            for o in orchs]
    sub = (f"{len(orchs)} active" if "orchestrations" not in errors
           else f"unknown: {errors['orchestrations']}")
    section("orchestrations", "Orchestrations", sub,
            table(["session", "project", "age", "since"], rows, "None active."))

    held = snap["locks"]
    rows = [(None, (h["name"], h["pid"] or "?",
                    "?" if h["age_s"] is None else _ago(h["age_s"]),
                    " · ".join(x for x in (h["note"], h["command"]) if x)))
            for h in held]
    section("locks", "Locks", f"{len(held)} held",
            table(["name", "pid", "age", "note · command"], rows, "None held."))

    s = snap["sync"]
    inner = []
    for r in s["repos"]:
        inner.append(f"<h3>{_esc(r['repo'])}</h3><p class=\"sub\">base {_esc(r['base'] or '?')}"
                     f" · last pass {_esc(_clock(r['last_pass'], now))}"
                     f"{'' if r['hooks'] else ' · hooks not installed'}"
                     f"{' · error: ' + _esc(r['error']) if r['error'] else ''}</p>")
        rows = []
        for w in r["worktrees"]:
            style = ("bad" if w["state"] == "conflict" else
                     "warn" if w["state"] == "skipped" else None)
            facts = [f"branch {w['branch'] or '-'}"]
            if w["ahead"] is not None:
                facts.append(f"+{w['ahead']} −{w['behind']}")
            facts.append({True: "dirty", False: "clean", None: "?"}[w["dirty"]])
            facts.append(f"synced {_clock(w['last_sync'], now)}")
            rows.append((style, (w["state"], (os.path.basename(w["path"].rstrip("/")),
                                              " · ".join(facts)), _detail(w) or "")))
        for p in r["conflicts"]:
            if p["b_worktree"] is not None:
                rows.append(("warn", ("predicted", (p["a"], f"with {p['b']}"),
                                      ", ".join(p["files"]))))
        inner.append(table(["state", "worktree", "detail"], rows, "No worktree recorded."))
    sub = (f"{_plural(len(s['repos']), 'repository', 'repositories')} · daemon "
           + (f"running (pid {s['daemon']['pid']})" if s["daemon"]["running"]
              else "not running"))
    section("sync", "Sync", sub, "".join(inner) or "<p class=\"empty\">No repository "
            "recorded.</p>")
    add("</body></html>\n")
    return "".join(parts)
