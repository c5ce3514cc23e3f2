"""orch-team: bring an agent team up from a team file, and take it down again.

Usage:
  orch-team up [--dry-run | --json] [--] TEAMFILE
  orch-team down [--keep-worktrees] SESSION
  orch-team ls [--json | --porcelain]
  orch-team -h | --help
  orch-team --version

Options:
  --dry-run         Print what up would do, and do nothing.
  --json            Print JSON (up: everything the team is made of).
  --porcelain       Print tab-separated records (columns in orch-team(1)).
  --keep-worktrees  Keep every worktree (down removes the clean, merged ones it made).
  -h --help         Show this help.
  --version         Show the version.
"""

import sys

from . import __version__, cli, clock, store, team, text, tmux

PROG = "orch-team"


def main(argv):
    args = cli.parse(__doc__, argv, f"{PROG} {__version__}")
    for verb in ("up", "down", "ls"):
        if args.get(verb):
            return globals()[f"cmd_{verb}"](args)
    return 0


def _record_json(t, agents=None):
    plan = t["plan"]
    return {"session": t["session"], "project": t["project"], "file": t["file"],
            "repo": plan["repo"], "base": plan["base"], "server": t["server"],
            "created": clock.iso(t["created"]), "hooks_installed": plan["hooks_installed"],
            "checkins": plan["checkins"],
            "agents": [{k: a.get(k) for k in ("name", "window", "branch", "worktree", "created",
                                             "branch_created", "alive") if k in a}
                       for a in (agents if agents is not None else plan["agents"])]}


def cmd_up(args):
    import signal

    def stop(signum, frame):  # undo what this up made, as for Ctrl-C, then exit 128+N
        raise SystemExit(128 + signum)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    t = team.load(args["TEAMFILE"])
    if args["--dry-run"]:
        team.check(t)
        sys.stdout.write(text.visible(team.plan_text(t), lines=True))
        return 0
    record, _ = team.up(store.connect(), t, tmux.server_from_env())
    if args["--json"]:
        cli.print_json(_record_json(record))
    else:
        print(record["session"])
    return 0


def cmd_down(args):
    kept = team.down(store.connect(), args["SESSION"], args["--keep-worktrees"])
    for path, why in kept:
        print(f"{PROG}: kept {text.visible(path)}: {text.visible(why)}", file=sys.stderr)
    return 0


def cmd_ls(args):
    teams = team.listing(store.connect())
    if args["--json"]:
        cli.print_json([_record_json(t, agents) for t, agents in teams])
        return 0
    rows = [(t["session"], a["name"], a.get("window") or "", _alive(a["alive"]),
             a["branch"], a["worktree"]) for t, agents in teams for a in agents]
    if args["--porcelain"]:
        cli.print_porcelain(rows)
    else:
        cli.print_table(rows, ["SESSION", "AGENT", "WINDOW", "STATE", "BRANCH", "WORKTREE"])
    return 0


def _alive(alive):
    return "running" if alive else "exited" if alive is False else "gone"


def run():
    cli.launch(PROG, main)
