"""orch-sync's engine, one job a module.

  repos    the repositories served: their key, lock, state files and registry row
  hooks    installing and removing the git hooks (chaining any that were there)
  events   the events file the hooks append to, and the FIFO that wakes the daemon
  context  what a pass knows about its repository: configuration, policy, base
  engine   the only code that moves a worktree: look, decide, move, recover
  predict  the merge-tree conflict matrix, the notices to agents, the target map
  passes   one pass over a repository, passes on events, the daemon loop
  view     what passes recorded, for status, the status file and orch-dash

Arrows run down this list's dependencies only: nothing here imports a
command line (cmd_*) or cli.
"""

QUIET = {"ORCH_SYNC_QUIET": "1"}  # our hooks record nothing for our own git commands
DAEMON_LOCK = "orch-sync.daemon"  # held by the one orch-sync daemon (locks.py)


def test_point(name):
    """A point where a test can stop orch-sync.  ORCH_SYNC_TEST_STEP=NAME:exit ends the
    process here at once, as kill -9 would (no clean-up runs); NAME:pause=DIR
    creates DIR/NAME and waits (at most 60 s) until DIR/go exists, so that a test
    can act between two steps.  Unset (always, outside tests), it costs one lookup."""
    import os
    spec = os.environ.get("ORCH_SYNC_TEST_STEP")
    if not spec:
        return
    want, _, action = spec.partition(":")
    if want != name:
        return
    if action == "exit":
        os._exit(137)
    if action.startswith("pause="):
        import time
        where = action[len("pause="):]
        with open(os.path.join(where, name), "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(where, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
