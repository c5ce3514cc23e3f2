"""orch-sched: persistent check-ins typed into tmux windows.

Usage:
  orch-sched add [--in=DUR | --at=TIME] [--every=DUR] [--key=KEY] [--account=NAME]
                 [--catch-up=POLICY] [--grace=DUR] [--retries=N] TARGET NOTE...
  orch-sched add --batch
  orch-sched list [--all | --status=S] [--json | --porcelain]
  orch-sched show ID [--json]
  orch-sched cancel ID...
  orch-sched run [--dry-run]
  orch-sched daemon [--detach]
  orch-sched status [--json]
  orch-sched log [ID] [--limit=N] [--json | --porcelain]
  orch-sched prune [--older=DUR]
  orch-sched limits [--json | --porcelain]
  orch-sched limits clear ACCOUNT
  orch-sched limits set ACCOUNT --until=TIME [--resume-note=TEXT]
  orch-sched check [--json] TARGET
  orch-sched import-seed DB
  orch-sched -h | --help
  orch-sched --version

Options:
  --in=DUR           Due DUR from now: 90s, 30m, 1h30m, 2d; a bare number is minutes.
  --at=TIME          Due at HH:MM[:SS] (the next such local time) or an ISO 8601 instant.
  --every=DUR        Repeat every DUR, anchored to the first due time.
  --key=KEY          Update the live task with this key instead of adding another.
  --account=NAME     The agent account the task belongs to (else $ORCH_ACCOUNT, else default).
  --catch-up=POLICY  A late occurrence: once (deliver it, marked late) or skip [default: once].
  --grace=DUR        How late still counts as on time [default: 10m].
  --retries=N        Retries after a failed first attempt [default: 5].
  --batch            Add the check-ins on stdin, one JSON object a line, all or none.
  --all              List tasks in every status.
  --status=S         List tasks in status S only.
  --json             Print JSON.
  --porcelain        Print tab-separated records (columns in orch-sched(1)).
  --dry-run          Print what a pass would do and do nothing.
  --detach           Start the daemon in the background if none runs; print its pid.
  --limit=N          Show the last N attempts [default: 50].
  --older=DUR        Prune finished tasks and log rows older than DUR [default: 30d].
  --until=TIME       End of the suspension: HH:MM[:SS] or an ISO 8601 instant.
  --resume-note=TEXT What to type into each limited window once the limit resets.
  -h --help          Show this help.
  --version          Show the version.
"""

import os
import signal
import sys

from . import __version__, cli, clock, store, tasks, text
from .errors import DATAERR, NO, UNAVAILABLE, OrchError

PROG = "orch-sched"


def main(argv):
    args = cli.parse(__doc__, argv, f"{PROG} {__version__}", free={"add": 1})
    for verb in ("add", "list", "show", "cancel", "run", "daemon", "status", "log", "prune",
                 "limits", "check", "import-seed"):
        if args.get(verb):
            return globals()[f"cmd_{verb.replace('-', '_')}"](args)
    return 0


def read_note(words):
    if words == ["-"]:
        data = sys.stdin.buffer.read() if sys.stdin else b""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise OrchError("the note on stdin is not valid UTF-8", DATAERR) from None
        return text.rstrip("\n")
    return " ".join(words)


def cmd_add(args):
    from . import tmux
    if args.get("--batch"):
        return _add_batch()
    target = tmux.check_target(args["TARGET"])
    note = tasks.check_note(read_note(args["FREE"]))
    now = clock.now()
    # (`is not None`: an empty value is a mistake to report, never "not given".)
    if args["--at"] is not None:
        due = clock.parse_time(args["--at"], now, "--at time")
    else:
        due = now + clock.parse_duration("0" if args["--in"] is None else args["--in"],
                                         "--in duration")
    every = (clock.parse_duration(args["--every"], "--every duration")
             if args["--every"] is not None else None)
    account = args["--account"] or os.environ.get("ORCH_ACCOUNT") or "default"
    grace = clock.parse_duration(args["--grace"], "--grace duration")
    retries = cli.integer(args["--retries"], "--retries count", 0, 100)
    server = tmux.server_from_env()
    lookup = tmux.Lookup(server)  # tmux answers while the check-in is stored
    conn = store.connect()
    task_id = tasks.add(conn, target, server, note, due, every_s=every, key=args["--key"],
                        account=account, catch_up=args["--catch-up"], grace_s=grace,
                        retries=retries)
    print(task_id, flush=True)
    found = lookup.result([target])[target]
    if isinstance(found, tmux.Missing):
        print(f"{PROG}: warning: {text.visible(target)}: {text.visible(str(found))} (the check-in "
              "is stored and will be tried when due)", file=sys.stderr)
    return 0


def _add_batch():
    """add --batch: JSON lines on stdin, validated as single adds, stored in one
    transaction; the ids printed one a line; one tmux call for them all."""
    import json

    from . import tmux
    now = clock.now()
    server = tmux.server_from_env()
    lookup = tmux.Lookup(server)
    account = os.environ.get("ORCH_ACCOUNT") or "default"
    items, number = [], []
    data = sys.stdin.buffer.read() if sys.stdin else b""
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise OrchError("not a JSON object")
            items.append(tasks.item(obj, server, now, account))
        except (ValueError, OrchError) as e:  # UnicodeDecodeError is a ValueError too
            message = e if isinstance(e, OrchError) else f"not JSON ({e})"
            raise OrchError(f"line {n}: {message}; nothing was added", DATAERR) from None
        number.append(n)
    conn = store.connect()
    try:
        ids = tasks.add_many(conn, items)
    except OrchError as e:
        where = f"line {number[e.index]}: " if getattr(e, "index", None) is not None else ""
        raise OrchError(f"{where}{e}; nothing was added", e.status) from None
    sys.stdout.write("".join(f"{i}\n" for i in ids))
    sys.stdout.flush()
    targets = sorted({item["target"] for item in items})
    for target, found in lookup.result(targets).items():
        if isinstance(found, tmux.Missing):
            print(f"{PROG}: warning: {text.visible(target)}: {text.visible(str(found))} (its "
                  "check-ins are stored and will be tried when due)", file=sys.stderr)
    return 0


def _statuses(args):
    if args["--all"]:
        return tasks.STATUSES
    if args["--status"] is not None:
        if args["--status"] not in tasks.STATUSES:
            raise OrchError(f"bad status: {args['--status']!r} (want one of "
                            f"{', '.join(tasks.STATUSES)})", DATAERR)
        return (args["--status"],)
    return tasks.LIVE


def cmd_list(args):
    conn = store.connect()
    if args["--porcelain"]:
        cli.print_porcelain(tasks.porcelain_listing(conn, _statuses(args)))
        return 0
    rows = tasks.listing(conn, _statuses(args))
    if args["--json"]:
        cli.print_json_array(tasks.as_json(r) for r in rows)
    else:
        now = clock.now()
        cli.print_table(((r["id"], text.truncate(r["target"], 16),
                          f"{clock.local(r['due'], with_date=False)} "
                          f"({clock.relative(r['due'], now)})",
                          clock.fmt_duration(r["every_s"]) if r["every_s"] else "",
                          r["status"], r["attempts"], r["note"])
                         for r in rows),
                        ["ID", "TARGET", "DUE", "EVERY", "STATUS", "TRIES", "NOTE"])
    return 0


def _task_or_fail(conn, text):
    task = tasks.get(conn, cli.integer(text, "task id", 1))
    if task is None:
        raise OrchError(f"no task {text}", NO)
    return task


def cmd_show(args):
    conn = store.connect()
    task = _task_or_fail(conn, args["ID"])
    history = list(tasks.attempts(conn, task["id"], limit=20))  # a cursor is always true
    if args["--json"]:
        obj = tasks.as_json(task)
        obj["log"] = [_attempt_json(a) for a in history]
        cli.print_json(obj)
        return 0
    obj = tasks.as_json(task)
    note = obj.pop("note")
    for key, value in obj.items():
        print(f"{key}: {'' if value is None else text.visible(str(value))}")
    print("note:")
    print(text.visible(note, lines=True))
    if history:
        print("log:")
        for a in history:
            print(f"  {clock.local(a['at'])}  {a['outcome']}  "
                  f"{text.visible(a['detail'] or '')}".rstrip())
    return 0


def cmd_cancel(args):
    ids = [cli.integer(text, "task id", 1) for text in args["ID"]]
    refused = tasks.cancel(store.connect(), ids)
    for task_id in refused:
        print(f"{PROG}: error: task {task_id} is unknown or already finished", file=sys.stderr)
    return NO if refused else 0


def cmd_run(args):
    from . import deliver
    if args["--dry-run"]:
        for task, action in deliver.dry_run():
            print(f"{action}\t{task['id']}\t{task['target']}\t{clock.iso(task['due'])}")
        return 0
    deliver.run_pass()
    return 0


def cmd_daemon(args):
    from . import deliver, tmux
    from .daemon import Daemon
    # Fail here, in the foreground, on what would stop every pass.
    conn = store.connect()
    tasks.next_wakeup(conn)
    conn.close()
    deliver.enter_delay()
    tmux.tmux_bin()
    daemon = Daemon(tasks.DAEMON_LOCK, wake_fifo=tasks.wake_path())
    if args["--detach"]:
        print(daemon.detach(deliver.daemon_loop, "orch-sched.log"))
        return 0
    daemon.serve(deliver.daemon_loop)
    return 130 if daemon.stopped_by == signal.SIGINT else 0


def cmd_status(args):
    from . import locks
    conn = store.connect()
    holder = locks.read_holder(tasks.DAEMON_LOCK)
    last = store.get_meta(conn, "daemon.last_pass")
    pending = conn.execute("SELECT COUNT(*) FROM tasks WHERE status IN ('pending', 'running')"
                           ).fetchone()[0]
    late = tasks.overdue(conn)
    waits = tasks.waiting(conn)
    healthy = not late and not waits and (holder is not None or pending == 0)
    if args["--json"]:
        cli.print_json({"daemon": holder is not None, "pid": holder and holder["pid"],
                        "last_pass": clock.iso(float(last)) if last else None,
                        "pending": pending, "overdue": len(late), "waiting": len(waits),
                        "healthy": healthy})
    else:
        print("daemon: " + (f"running, pid {holder['pid']}" if holder else "not running"))
        print(f"last daemon pass: {clock.local(float(last)) if last else 'never'}")
        print(f"pending: {pending}")
        print(f"overdue: {len(late)}" + (f" ({', '.join(str(t['id']) for t in late)})"
                                         if late else ""))
        print(f"waiting: {len(waits)}" + "".join(
            f"\n  {t['id']} {text.visible(t['target'])}: {text.visible(t['reason'] or '')}"
            for t in waits))
    return 0 if healthy else NO


def _attempt_json(a):
    return {"at": clock.iso(a["at"]), "task": a["task_id"], "due": clock.iso(a["due"]),
            "target": a["target"], "pane": a["pane"], "outcome": a["outcome"],
            "detail": a["detail"]}


def cmd_log(args):
    conn = store.connect()
    task_id = _task_or_fail(conn, args["ID"])["id"] if args["ID"] else None
    rows = tasks.attempts(conn, task_id, cli.integer(args["--limit"], "--limit count", 1))
    if args["--json"]:
        cli.print_json_array(_attempt_json(a) for a in rows)
    elif args["--porcelain"]:
        cli.print_porcelain((clock.iso(a["at"]), a["task_id"], a["target"], a["pane"],
                             a["outcome"], a["detail"]) for a in rows)
    else:
        cli.print_table(((clock.local(a["at"]), a["task_id"], text.truncate(a["target"], 16),
                          a["outcome"], a["detail"]) for a in rows),
                        ["AT", "TASK", "TARGET", "OUTCOME", "DETAIL"])
    return 0


def cmd_prune(args):
    age = clock.parse_duration(args["--older"], "--older duration")
    gone, rows = tasks.prune(store.connect(), age)
    print(f"pruned {gone} tasks and {rows} log rows", file=sys.stderr)
    return 0


def cmd_limits(args):
    from . import limits
    conn = store.connect()
    account = args.get("ACCOUNT")
    if account is not None:
        tasks.check_label(account, "account")
    if args.get("clear"):
        if not limits.clear(conn, account):
            raise OrchError(f"account {account} is not suspended", NO)
        tasks.wake()
        return 0
    if args.get("set"):
        until = clock.parse_time(args["--until"], what="--until time")
        note = args["--resume-note"]
        if note is not None:
            tasks.check_note(note)
        limits.set_until(conn, account, until, note)
        tasks.wake()
        return 0
    now = clock.now()
    accounts = limits.listing(conn)
    rows = [limits.account_json(a, panes, now) for a, panes in accounts]
    if args["--json"]:
        cli.print_json(rows)
    elif args["--porcelain"]:
        cli.print_porcelain((r["account"], r["state"], r["until"], r["left_s"], r["kind"],
                             ",".join(r["windows"]), r["how"]) for r in rows)
    else:
        cli.print_table([(r["account"], r["state"], clock.local(a["until"]),
                          clock.fmt_duration(r["left_s"] or 0), r["kind"] or "",
                          ",".join(r["windows"]), r["how"])
                         for r, (a, _) in zip(rows, accounts, strict=True)],
                        ["ACCOUNT", "STATE", "UNTIL", "LEFT", "KIND", "WINDOWS", "HOW"])
    return 0


def cmd_check(args):
    from . import deliver, panes, procs, tmux
    target = args["TARGET"]
    foreground = cursor = None
    if target == "-":
        data = sys.stdin.buffer.read() if sys.stdin else b""
        screen = data.decode("utf-8", errors="replace")
    else:
        tmux.check_target(target)
        server = tmux.server_from_env()
        try:
            pane = tmux.inspect(server, tmux.resolve(server, target).id)
        except tmux.Missing as e:
            raise OrchError(f"{target}: {e}", UNAVAILABLE) from None
        screen, cursor = pane.screen, pane.cursor
        foreground = procs.foreground(pane.pid, pane.command)
    seen = panes.classify(screen, clock.now(), foreground, deliver.agent_commands(), cursor)
    if args["--json"]:
        cli.print_json(seen.as_json())
    else:
        for key, value in seen.as_json().items():
            if value is not None and (key != "menu" or seen.limit):
                print(f"{key}: {text.visible(str(value))}")
    return 0 if seen.typable else NO



def cmd_import_seed(args):
    from . import seed, tmux
    conn = store.connect()
    added, skipped = seed.import_db(conn, args["DB"], tmux.server_from_env())
    for task_id in added:
        print(task_id)
    for n, why in skipped:
        print(f"{PROG}: warning: row {n}: {text.visible(why)}", file=sys.stderr)
    return NO if skipped else 0


def run():
    cli.launch(PROG, main)
