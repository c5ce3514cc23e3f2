"""The program in a pane's foreground, found through wrappers (Linux /proc).

Rules:
- Start at the foreground process group of the pane's terminal: the tpgid of
  the pane's first process (field 8 of /proc/PID/stat).  tmux's
  pane_current_command names only that group's leader, which may be a wrapper.
- Follow children down through wrappers: programs that wait on one child
  (env, nice, timeout, ...) and those that run it on a terminal of their own
  (script, sudo with use_pty, unbuffer), whose child is in another session.
- A shell with a child in the foreground group of its terminal is a wrapper
  too: `bash -c 'cd DIR && claude; exec bash'` waits on claude, which decides.
  A shell with no such child is at its prompt: the pane runs a shell, and a
  note typed there would run as a command.
- Without /proc, or when the walk loses a process that just ended, the pane's
  current command is all there is; ssh and the like are decided by the screen.
"""

import os
from collections import namedtuple

SHELLS = frozenset({"sh", "bash", "zsh", "fish", "dash", "ksh", "mksh", "tcsh", "csh", "ash",
                    "yash", "nu", "elvish", "xonsh", "rbash"})
WRAPPERS = frozenset({"env", "nice", "nohup", "timeout", "stdbuf", "ionice", "chrt", "taskset",
                      "setsid", "time", "script", "sudo", "doas", "su", "runuser", "unbuffer",
                      "expect", "flock", "orch-lock", "tini", "dumb-init", "catatonit",
                      "firejail", "bwrap", "unshare", "nsenter", "direnv", "npx", "npm",
                      "uv", "uvx", "pipx", "poetry"})
MAX_DEPTH = 24

# command: the name of the program found; shell: it is a shell at its prompt;
# via: the names walked through to reach it (wrappers and waiting shells).
Foreground = namedtuple("Foreground", "command shell via")


def is_shell(command):
    """A login shell shows as -bash; busybox may run as sh."""
    return command.lstrip("-") in SHELLS


def foreground(pane_pid, command):
    """What pane PANE_PID (tmux's #{pane_pid}) runs -> Foreground.

    COMMAND is tmux's pane_current_command, the answer when /proc cannot say.
    """
    fallback = Foreground(command, is_shell(command), ())
    if not pane_pid:
        return fallback
    try:
        tpgid = _stat(pane_pid)[3]
        pid = tpgid if tpgid > 0 and os.path.exists(f"/proc/{tpgid}") else pane_pid
        via = []
        for _ in range(MAX_DEPTH):
            name, _, _, fg = _stat(pid)
            name = name.lstrip("-")
            kids = [k for k in _children(pid) if _alive(k)]
            if name in SHELLS:
                # Its foreground child (no job control: same group), if any.
                kids = [k for k in kids if _stat(k)[2] == fg]
            elif name not in WRAPPERS:
                return Foreground(name, False, tuple(via))
            if not kids:
                return Foreground(name, name in SHELLS, tuple(via))
            via.append(name)
            pid = kids[0]
        return Foreground(name, False, tuple(via))
    except (OSError, ValueError, IndexError):
        return fallback


def _stat(pid):
    """/proc/PID/stat -> (comm, ppid, pgrp, tpgid)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    close = data.rindex(b")")
    name = data[data.index(b"(") + 1:close].decode(errors="replace")
    fields = data[close + 2:].split()
    return name, int(fields[1]), int(fields[2]), int(fields[5])


def _children(pid):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                kids += [int(k) for k in f.read().split()]
        except FileNotFoundError:  # the thread ended, or no CONFIG_PROC_CHILDREN
            continue
    return sorted(kids)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False
