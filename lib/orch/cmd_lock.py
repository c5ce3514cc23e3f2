"""orch-lock: named locks that cannot go stale, and concurrent orchestrations.

Usage:
  orch-lock run [-n | -w SECS] [-E CODE] [-m TEXT] NAME COMMAND [ARG...]
  orch-lock who [NAME] [--json | --porcelain]
  orch-lock new PROJECT [--json]
  orch-lock ls [--all] [--json | --porcelain]
  orch-lock end SESSION
  orch-lock prune [--older=DUR] [--delete]
  orch-lock -h | --help
  orch-lock --version

Options:
  -n             Fail at once if NAME is held.
  -w SECS        Wait at most SECS seconds (fractional) for NAME.
  -E CODE        Exit status when NAME stays held [default: 75].
  -m TEXT        A note on why NAME is held, shown by who.
  --all          List ended orchestrations too.
  --json         Print JSON.
  --porcelain    Print tab-separated records (columns in orch-lock(1)).
  --older=DUR    Forget orchestrations ended more than DUR ago [default: 24h].
  --delete       Also delete registry directories that still hold files.
  -h --help      Show this help.
  --version      Show the version.
"""

import os
import sys

from . import __version__, cli, clock, locks, text
from .errors import NO, OrchError

PROG = "orch-lock"
VERBS = ("run", "who", "new", "ls", "end", "prune")
FOREVER = 1e9  # the longest -w; waiting that long is waiting without end (setitimer's range)


def main(argv):
    args = cli.parse(__doc__, argv, f"{PROG} {__version__}", free={"run": 1})
    for verb in VERBS:
        if args.get(verb):
            return globals()[f"cmd_{verb}"](args)
    return 0


def _exit_code(text):
    return cli.integer(text, "-E value (an exit status)", 0, 255)


def warn_network(path):
    kind = locks.on_network_fs(path)
    if kind:
        print(f"{PROG}: warning: {path} is on a network file system ({kind}); locks there "
              "are not reliable: set ORCH_HOME to a local directory", file=sys.stderr)


def cmd_run(args):
    name = locks.check_name(args["NAME"])
    code = _exit_code(args["-E"])
    wait = None if args["-w"] is None else clock.parse_seconds(args["-w"], "-w value", 0, FOREVER)
    fd = locks.open_lock(name)
    command = None
    try:
        warn_network(os.path.dirname(locks.lock_path(name)))
        command = locks.Command(args["FREE"])  # forked now, so a waiter is ready to go
        if not locks.acquire(fd, blocking=False):
            if args["-n"] or (wait is not None and wait <= 0):
                raise _held(name, code)
            if wait is None or wait >= FOREVER:
                locks.acquire(fd)
            elif not locks.acquire_within(fd, wait):
                raise _held(name, code)
        return command.run(name, note=args["-m"])
    finally:
        if command:
            command.cancel()
        os.close(fd)


def _held(name, code):
    record = locks.read_holder(name)
    by = ""
    if record:
        from . import clock
        by = f" by pid {record['pid']}"
        if record.get("command"):
            by += f" ({text.truncate(record['command'], 40)})"
        if record.get("since"):
            by += f" since {clock.local(record['since'])}"
    return OrchError(f"lock {name} is held{by}", code)


def _holder_json(r):
    from . import clock
    return {"name": r["name"], "pid": r.get("pid"), "host": r.get("host"),
            "since": clock.iso(r.get("since")), "command": r.get("command"),
            "note": r.get("note")}


def cmd_who(args):
    from . import clock
    records = locks.who(args["NAME"])
    if args["--json"]:
        cli.print_json([_holder_json(r) for r in records])
    elif args["--porcelain"]:
        cli.print_porcelain((j["name"], j["pid"], j["host"], j["since"], j["command"], j["note"])
                            for j in map(_holder_json, records))
    else:
        cli.print_table([(r["name"], r.get("pid"), r.get("host"),
                          clock.local(r.get("since")), r.get("note"), r.get("command"))
                         for r in records],
                        ["NAME", "PID", "HOST", "SINCE", "NOTE", "COMMAND"])
    return 0 if records or not args["NAME"] else NO


def cmd_new(args):
    from . import clock, orchestrations, store, tmux
    conn = store.connect()
    warn_network(orchestrations.root())
    o = orchestrations.create(conn, args["PROJECT"], tmux.server_from_env())
    if args["--json"]:
        cli.print_json({"session": o["session"], "dir": o["dir"], "project": o["project"],
                        "created": clock.iso(o["created"]), "server": o["server"]})
    else:
        cli.print_porcelain([(o["session"], o["dir"])])
    return 0


def cmd_ls(args):
    from . import clock, orchestrations, store
    rows = orchestrations.listing(store.connect(), include_ended=args["--all"])
    if args["--json"]:
        cli.print_json([orchestrations.as_json(o) for o in rows])
    elif args["--porcelain"]:
        cli.print_porcelain((o["session"], o["project"], o["state"], clock.iso(o["created"]),
                             o["dir"]) for o in rows)
    else:
        cli.print_table([(o["session"], text.truncate(o["project"], 20), o["state"],
                          clock.local(o["created"]), o["dir"]) for o in rows],
                        ["SESSION", "PROJECT", "STATE", "CREATED", "DIR"])
    return 0


def cmd_end(args):
    from . import orchestrations, store
    if not orchestrations.end(store.connect(), args["SESSION"]):
        raise OrchError(f"no orchestration {args['SESSION']!r}", NO)
    return 0


def cmd_prune(args):
    from . import clock, orchestrations, store
    age = clock.parse_duration(args["--older"], "--older duration")
    gone, kept = orchestrations.prune(store.connect(), age, delete=args["--delete"])
    for o in kept:
        print(f"{PROG}: kept {o['session']}: {o['dir']} still has files (--delete removes it)",
              file=sys.stderr)
    print(f"{PROG}: forgot {gone} orchestration{'' if gone == 1 else 's'}", file=sys.stderr)
    return 0


def run():
    cli.launch(PROG, main)
