#!/usr/bin/env python3
"""A stand-in agent for tests: run it in a tmux pane.

    agent.py RECORD [--bracketed] [--screen FILE]

It puts its terminal in raw mode, then creates RECORD (so a test can wait for
the file to know the agent is ready) and appends every byte it receives to it,
exactly as received.  With --bracketed it asks the terminal for bracketed
paste.  With --screen it shows FILE's text and shows it again whenever the file
changes (a prompt, a usage-limit notice, a menu).
"""

import os
import select
import sys
import termios
import tty


def show(path, last):
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return last
    if stamp != last:
        with open(path, "rb") as f:
            text = f.read()
        os.write(1, b"\x1b[H\x1b[2J" + text.replace(b"\n", b"\r\n"))
    return stamp


def main(argv):
    record, screen = argv[0], None
    bracketed = "--bracketed" in argv
    if "--screen" in argv:
        screen = argv[argv.index("--screen") + 1]
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        if bracketed:
            os.write(1, b"\x1b[?2004h")
        stamp = show(screen, None) if screen else None
        with open(record, "ab", buffering=0) as out:
            while True:
                ready, _, _ = select.select([0], [], [], 0.05)
                if ready:
                    data = os.read(0, 65536)
                    if not data:
                        return 0
                    out.write(data)
                if screen:
                    stamp = show(screen, stamp)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
