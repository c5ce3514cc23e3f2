"""orch-sync: keep every agent's git worktree current with the team, and see conflicts early.

Usage:
  orch-sync install [--repo=DIR]
  orch-sync uninstall [--repo=DIR]
  orch-sync run [--repo=DIR]...
  orch-sync daemon [--detach] [--repo=DIR]...
  orch-sync now [--repo=DIR] [--json | --porcelain]
  orch-sync status [--repo=DIR] [--json | --porcelain]
  orch-sync conflicts [--repo=DIR] [--json | --porcelain]
  orch-sync map WORKTREE TARGET
  orch-sync unmap WORKTREE
  orch-sync -h | --help
  orch-sync --version

Options:
  --repo=DIR   The repository: any directory in it or in one of its worktrees.
               install, uninstall, now and conflicts default to the current
               directory's; run, daemon and status to every repository
               installed from this state directory.
  --detach     Start the daemon in the background if none runs; print its pid.
  --json       Print JSON.
  --porcelain  Print tab-separated records (columns in orch-sync(1)).
  -h --help    Show this help.
  --version    Show the version.
"""

import sys

from . import __version__, cli, clock, git, store, sync, text
from .errors import NO, UNAVAILABLE, OrchError
from .sync import events, hooks, passes, predict, repos, view

PROG = "orch-sync"
VERBS = ("install", "uninstall", "run", "daemon", "now", "status", "conflicts", "map", "unmap")


def main(argv):
    args = cli.parse(__doc__, argv, f"{PROG} {__version__}")
    for verb in VERBS:
        if args.get(verb):
            return globals()[f"cmd_{verb}"](args)
    return 0


def _dirs(args):
    value = args.get("--repo")
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _repo(args):
    dirs = _dirs(args)
    return git.repo(dirs[0] if dirs else ".")


def _installed_repos(args, conn):
    """The repositories named by --repo (each must be installed), else every installed one."""
    if not _dirs(args):
        return repos.installed(conn)
    known = {r.common_dir: r for r in repos.installed(conn)}
    found = []
    for directory in _dirs(args):
        repo = git.repo(directory)
        if repo.common_dir not in known:
            raise OrchError(f"orch-sync is not installed in {repo.top} (run: orch-sync install "
                            f"--repo={repo.top})", UNAVAILABLE)
        found.append(repo)
    return found


def cmd_install(args):
    repo = _repo(args)
    print(hooks.install(store.connect(), repo))
    return 0


def cmd_uninstall(args):
    repo = _repo(args)
    warnings = hooks.uninstall(store.connect(), repo)
    for warning in warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return NO if warnings else 0


def cmd_run(args):
    git.git_bin()  # even with nothing to do: a cron job without git should say so
    conn = store.connect()
    failed = passes.run_events(_installed_repos(args, conn))
    for _top, message in failed:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    return NO if failed else 0


def cmd_daemon(args):
    import signal

    from .daemon import Daemon
    # Fail here, in the foreground, on what would make every pass fail.
    git.git_bin()
    conn = store.connect()
    repos.check_store(conn)
    only = _installed_repos(args, conn) if _dirs(args) else None
    conn.close()
    daemon = Daemon(sync.DAEMON_LOCK, wake_fifo=events.wake_path())

    def loop(d):
        passes.serve(d, only)

    if args["--detach"]:
        print(daemon.detach(loop, "orch-sync.log"))
        return 0
    daemon.serve(loop)
    return 130 if getattr(daemon, "stopped_by", None) == signal.SIGINT else 0


def cmd_now(args):
    repo = _repo(args)
    passes.process(repo, force=True, once=True)
    conn = store.connect()
    rows = view.recorded_status(conn, repo.common_dir)
    _print_status(conn, rows, args, repo.common_dir)
    error = next((r["error"] for r in view.recorded_repos(conn)
                  if r["repo"] == repo.common_dir), None)
    if error:  # no base to compare with: nothing was synced or predicted
        print(f"{PROG}: error: {text.visible(f'{repo.top}: {error}')}", file=sys.stderr)
        return UNAVAILABLE
    return NO if view.attention(rows) else 0


def cmd_status(args):
    conn = store.connect()
    repo = _repo(args).common_dir if _dirs(args) else None
    for served in repos.installed(conn):
        if repo is None or served.common_dir == repo:
            passes.settle(served)
    rows = view.recorded_status(conn, repo)
    if repo and not rows:
        print(f"{PROG}: no pass recorded for {_dirs(args)[0]} yet (run: orch-sync now)",
              file=sys.stderr)
        return NO
    _print_status(conn, rows, args, repo)
    return NO if view.attention(rows) else 0


def _detail(r):
    if r["state"] == "conflict":
        return ", ".join(r["files"])
    return r["reason"]


def _print_status(conn, rows, args, repo):
    if args["--json"]:
        cli.print_json([{
            "repo": r["top"], "path": r["path"], "branch": r["branch"], "head": r["head"],
            "base": r["base"], "ahead": r["ahead"], "behind": r["behind"], "dirty": r["dirty"],
            "state": r["state"], "reason": r["reason"], "files": r["files"],
            "action": r["action"], "target": r["target"], "checked": clock.iso(r["checked"]),
            "last_sync": clock.iso(r["last_sync"])} for r in rows])
    elif args["--porcelain"]:
        cli.print_porcelain((r["path"], r["branch"], r["head"], r["ahead"], r["behind"],
                             None if r["dirty"] is None else int(r["dirty"]), r["state"],
                             clock.iso(r["last_sync"]), r["top"], _detail(r)) for r in rows)
    else:
        sys.stdout.write(view.status_text(conn, repo))


def cmd_conflicts(args):
    repo = _repo(args)
    ctx, pairs = predict.conflicts_now(store.connect(), repo)
    if args["--json"]:
        cli.print_json(pairs)
    elif args["--porcelain"]:
        records = []
        for p in pairs:
            result = "error" if p["error"] else "clean" if p["clean"] else "conflict"
            if p["files"]:
                records += [(p["a"], p["b"], result, f) for f in p["files"]]
            else:
                records.append((p["a"], p["b"], result, p["error"]))
        cli.print_porcelain(records)
    else:
        cli.print_table([(p["a"], p["b"],
                          f"error: {p['error']}" if p["error"] else
                          "clean" if p["clean"] else f"conflict: {', '.join(p['files'])}")
                         for p in pairs], ["BRANCH", "WITH", "RESULT"], width=100)
    return 0 if all(p["clean"] for p in pairs) else NO


def cmd_map(args):
    from . import tmux
    target = tmux.check_target(args["TARGET"])
    print(predict.map_target(store.connect(), args["WORKTREE"], target,
                               tmux.server_from_env()))
    return 0


def cmd_unmap(args):
    if predict.unmap_target(store.connect(), args["WORKTREE"]) is None:
        print(f"{PROG}: error: no target is mapped for {args['WORKTREE']}", file=sys.stderr)
        return NO
    return 0


def run():
    cli.launch(PROG, main)
