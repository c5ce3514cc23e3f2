#!/usr/bin/env python3
"""A stand-in agent for tests: run it in a tmux pane.

    agent.py RECORD [--bracketed] [--screen FILE [--cursor ROW]]
             [--layout claude --mode FILE [--drop-enter-within SECS | --no-enter]
              [--busy-after-submit SECS]]

It puts its terminal in raw mode, then creates RECORD (so a test can wait for
the file to know the agent is ready) and appends every byte it receives to it,
exactly as received.  With --bracketed it asks the terminal for bracketed
paste.  With --screen it shows FILE's text and shows it again whenever the file
changes (a prompt, a usage-limit notice, a menu), then puts the cursor on
screen row ROW (from 0), if given, where the program would have left it.

With --layout claude it draws what Claude Code draws: its history, an input
box between two rules (`❯` and a no-break space, then what has been typed),
and a footer.  Typed text shows in the box; Enter moves it to the history,
with a one-line answer;
Ctrl-U clears it.  The MODE file says what else is on screen, and is read again
whenever it changes: `idle`, `busy` (a spinner and "esc to interrupt"), or
`dialog` (the folder-trust question in place of the input box), or
`limited` (a usage-limit notice above it).  With --busy-after-submit it works
on each prompt for SECS seconds (busy) before it answers.  With
--drop-enter-within it ignores an Enter that comes less than SECS after the
last text it was given (as Gemini CLI does within 20 ms of a paste); with
--no-enter it ignores every Enter.
"""

import os
import select
import sys
import termios
import time
import tty

RULE = "─" * 100
DIALOG = [
    "╭" + "─" * 98 + "╮",
    "│ Do you trust the files in this folder?" + " " * 59 + "│",
    "│" + " " * 98 + "│",
    "│ ❯ 1. Yes, I trust this folder" + " " * 68 + "│",
    "│   2. No, exit" + " " * 84 + "│",
    "╰" + "─" * 98 + "╯",
    "   Enter to confirm · Esc to cancel",
]


def stamp_of(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def show(path, last, cursor=None):
    stamp = stamp_of(path)
    if stamp is not None and stamp != last:
        with open(path, "rb") as f:
            text = f.read()
        move = b"" if cursor is None else f"\x1b[{cursor + 1};1H".encode()
        os.write(1, b"\x1b[H\x1b[2J" + text.replace(b"\n", b"\r\n") + move)
    return stamp if stamp is not None else last


class Claude:
    """Claude Code's layout, drawn again after every change."""

    def __init__(self, mode_path, drop_within=0.0, no_enter=False, busy_for=0.0):
        self.mode_path, self.stamp, self.mode = mode_path, None, "idle"
        self.busy_for, self.busy_until = busy_for, 0.0
        self.history, self.typed = ["╭─── Claude Code (stand-in) ───╮", ""], ""
        self.drop_within, self.no_enter, self.last_text = drop_within, no_enter, 0.0

    def feed(self, data):
        text = data.decode("utf-8", errors="replace")
        for marker in ("\x1b[200~", "\x1b[201~"):
            text = text.replace(marker, "")
        now = time.monotonic()
        for ch in text:
            if ch == "\r":
                if self.no_enter or now - self.last_text < self.drop_within:
                    continue
                if self.typed:  # taken, and answered (after BUSY_FOR seconds of work)
                    self.history += [f"❯ {self.typed}", ""]
                    self.busy_until = now + self.busy_for
                    if not self.busy_for:
                        self.history += ["● (stand-in) Noted.", ""]
                self.typed = ""
            elif ch == "\x15":
                self.typed = ""
            elif ch >= " ":
                self.typed += ch
                self.last_text = now
        self.draw()

    def poll(self):
        if self.busy_until and time.monotonic() >= self.busy_until:
            self.busy_until = 0.0
            self.history += ["● (stand-in) Noted.", ""]
            self.draw()
        stamp = stamp_of(self.mode_path)
        if stamp is not None and stamp != self.stamp:
            self.stamp = stamp
            with open(self.mode_path) as f:
                self.mode = f.read().strip() or "idle"
            self.draw()

    def draw(self):
        lines = list(self.history)
        if self.mode == "dialog":
            lines += DIALOG
        else:
            busy = self.mode == "busy" or self.busy_until
            if self.mode == "limited":
                lines += ["  ⎿  You've hit your limit · resets 9pm (UTC)", ""]
            if busy:
                lines += ["✻ Working… (3s · esc to interrupt)", ""]
            lines += [RULE, "❯\u00a0" + self.typed, RULE]
            lines.append("  esc to interrupt" if busy else "  ? for shortcuts")
        os.write(1, ("\x1b[H\x1b[2J" + "\r\n".join(lines)).encode())


def main(argv):
    record, screen, layout, cursor = argv[0], None, None, None
    bracketed = "--bracketed" in argv
    if "--screen" in argv:
        screen = argv[argv.index("--screen") + 1]
    if "--cursor" in argv:
        cursor = int(argv[argv.index("--cursor") + 1])
    if "--layout" in argv:
        def number(option):
            return float(argv[argv.index(option) + 1]) if option in argv else 0.0
        layout = Claude(argv[argv.index("--mode") + 1], number("--drop-enter-within"),
                        "--no-enter" in argv, number("--busy-after-submit"))
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        if bracketed:
            os.write(1, b"\x1b[?2004h")
        stamp = show(screen, None, cursor) if screen else None
        if layout:
            layout.poll()
            layout.draw()
        with open(record, "ab", buffering=0) as out:
            while True:
                ready, _, _ = select.select([0], [], [], 0.05)
                if ready:
                    data = os.read(0, 65536)
                    if not data:
                        return 0
                    out.write(data)
                    if layout:
                        layout.feed(data)
                if screen:
                    stamp = show(screen, stamp, cursor)
                if layout:
                    layout.poll()
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
