"""The program in a pane's foreground, found through wrappers (Linux /proc).

Rules:
- Start at the foreground process group of the pane's terminal: the tpgid of
  the pane's first process (field 8 of /proc/PID/stat).  tmux's
  pane_current_command names only that group's leader, which may be a wrapper.
- Follow children down through wrappers: programs that wait on one child
  (env, nice, timeout, ...) and those that run it on a terminal of their own
  (script, sudo with use_pty, unbuffer), whose child is in another session.
- A shell waiting on a child in the foreground group of its terminal is a
  wrapper too: `bash -c 'cd DIR && claude; exec bash'` waits on claude, which
  decides.  A shell that is not waiting (its wchan is not do_wait) is at its
  prompt, whatever it started in the background: the pane runs a shell, and a
  note typed there would run as a command.
- Any program whose child is a shell at its prompt on a terminal of its own
  (pty.spawn, expect, a terminal multiplexer's client) is a terminal wrapper:
  the shell decides.
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
                # Its foreground child (no job control: same group), if it waits on one.
                kids = [k for k in kids if _stat(k)[2] == fg] if _waiting(pid) else []
            elif name not in WRAPPERS:
                shell = next((k for k in kids if _own_terminal(k, pid) and _at_prompt(k)), None)
                if shell is None:
                    return Foreground(name, False, tuple(via))
                kids = [shell]
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


def _waiting(pid):
    """True if the shell PID waits on a child (wait4); without wchan, if it runs `-c`."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = "0"
    if wchan != "0":
        return wchan == "do_wait"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"-c" in f.read().split(b"\0")[1:]


def _own_terminal(pid, parent):
    """True if PID leads a session of its own (a new terminal), apart from PARENT's."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    with open(f"/proc/{parent}/stat", "rb") as f:
        theirs = f.read().rsplit(b")", 1)[1].split()
    return fields[3] == str(pid).encode() and fields[4] != theirs[4]


def _at_prompt(pid):
    """True if PID is a shell with nothing in the foreground of its terminal but itself."""
    name, _, pgrp, fg = _stat(pid)
    return is_shell(name) and fg == pgrp and not _waiting(pid)


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
