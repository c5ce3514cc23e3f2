"""orch-dash: one glance at every team: check-ins, limits, orchestrations, locks, sync.

Usage:
  orch-dash [--project=P] [--json | --porcelain] [--output=FILE] [--html=FILE]
  orch-dash --watch [-n SECS] [--project=P]
  orch-dash line [--ascii] [--project=P]
  orch-dash serve [--port=N] [--project=P]
  orch-dash -h | --help
  orch-dash --version

Options:
  --project=P    Show only what belongs to project P (see orch-dash(1)).
  --json         Print one JSON object.
  --porcelain    Print tab-separated records, the section first (see orch-dash(1)).
  --output=FILE  Write the view to FILE (atomically) instead of standard output.
  --html=FILE    Write a self-contained web page to FILE (atomically).
  --watch        Redraw the view in place; q or Ctrl-C quits.
  -n SECS        Seconds between redraws [default: 2].
  --ascii        Plain ASCII instead of symbols.
  --port=N       The port to listen on, on 127.0.0.1 (0: any free one) [default: 8377].
  -h --help      Show this help.
  --version      Show the version.
"""

import os
import re
import sys

from . import __version__, cli, clock, dash, store
from .errors import NO, UNAVAILABLE, OrchError

PROG = "orch-dash"


def main(argv):
    if argv[:1] == ["line"]:
        # The status line runs on every tmux refresh: parse its few words by hand
        # rather than pay for docopt (anything else goes to docopt for its errors).
        fast = _line_words(argv[1:])
        if fast is not None:
            return cmd_line(*fast)
    args = cli.parse(__doc__, argv, f"{PROG} {__version__}")
    if args.get("line"):
        return cmd_line(args["--ascii"], args["--project"])
    if args.get("serve"):
        return cmd_serve(args)
    if args.get("--watch"):
        return cmd_watch(args)
    return cmd_view(args)


def _line_words(words):
    """(ascii, project) from `line`'s words, or None if they need docopt."""
    ascii_, project, i = False, None, 0
    while i < len(words):
        word = words[i]
        if word == "--ascii":
            ascii_ = True
        elif word.startswith("--project="):
            project = word[len("--project="):]
        elif word == "--project" and i + 1 < len(words):
            i += 1
            project = words[i]
        else:
            return None
        i += 1
    return ascii_, project


def _status(snap):
    return NO if snap["attention"] else 0


def cmd_view(args):
    conn = store.connect()
    snap = dash.gather(conn, args["--project"])
    output, page = args["--output"], args["--html"]
    if args["--json"]:
        text = dash.json_text(snap)
    elif args["--porcelain"]:
        text = dash.porcelain_text(snap)
    else:
        text = dash.text(snap, colour=not output and cli.colour_on())
    if output:
        from .paths import write_atomic
        write_atomic(output, text)
    if page:
        from .paths import write_atomic
        write_atomic(page, dash.html(snap))
    if not (output or page):
        sys.stdout.write(text)
    return _status(snap)


def cmd_line(ascii_, project):
    text, attention = dash.line(store.connect(), ascii_, project)
    sys.stdout.write(text + "\n")
    return NO if attention else 0


def cmd_watch(args):
    secs = clock.parse_seconds(args["-n"], "-n value", 0.1, 86400)
    project = args["--project"]
    dash.owner(project)  # a bad project name fails now, not on the first redraw
    conn = store.connect()

    def render(width, colour):
        return dash.text(dash.gather(conn, project), width, colour)

    if not sys.stdout.isatty():
        import time
        while True:  # snapshots, one every SECS, until killed or the pipe closes
            sys.stdout.write(render(80, False) + "\n")
            sys.stdout.flush()
            time.sleep(secs)
    return watch_terminal(render, secs)


def watch_terminal(render, secs):
    """Redraw RENDER(width, colour) full-screen every SECS until q (0) or Ctrl-C (130).

    The alternate screen keeps the user's scrollback; the terminal's modes,
    the cursor and the main screen are restored however the loop ends.
    """
    import select
    import signal
    import time
    out = sys.stdout
    key_fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    saved = None
    resized = []

    def on_winch(signum, frame):
        resized.append(True)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig, handler in
           ((signal.SIGWINCH, on_winch), (signal.SIGTERM, on_term), (signal.SIGHUP, on_term))}
    try:
        if key_fd is not None:
            import termios
            import tty
            saved = termios.tcgetattr(key_fd)
            tty.setcbreak(key_fd)  # keys one at a time, unechoed; Ctrl-C still interrupts
        out.write("\033[?1049h\033[?25l")
        while True:
            cols, rows = os.get_terminal_size(out.fileno())
            # One column spare: a full last column leaves the cursor pending a wrap.
            lines = render(max(cols - 1, 20), cli.colour_on(out)).rstrip("\n").split("\n")
            out.write("\033[H" + "\n".join("\033[2K" + line for line in lines[:rows])
                      + "\033[J")
            out.flush()
            del resized[:]
            deadline = time.monotonic() + secs
            while not resized and (left := deadline - time.monotonic()) > 0:
                if key_fd is None:
                    time.sleep(min(left, 0.1))
                    continue
                if select.select([key_fd], [], [], min(left, 0.1))[0]:
                    keys = os.read(key_fd, 64)
                    if not keys or b"q" in keys.lower():
                        return 0
                    break  # any other key: redraw now
    finally:
        out.write("\033[?25h\033[?1049l")
        out.flush()
        if saved is not None:
            import termios
            termios.tcsetattr(key_fd, termios.TCSADRAIN, saved)
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _port(text):
    return cli.integer(text, "--port value", 0, 65535)  # ASCII digits only


HOST = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?", re.ASCII)
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


def cmd_serve(args):
    from . import httpd
    port = _port(args["--port"])
    project = args["--project"]
    dash.owner(project)
    store.connect().close()  # an unusable store fails now, in the foreground

    def answer(method, target, headers):
        def text(code, body, **extra):
            return code, dict(HEADERS, **{"Content-Type": "text/plain"}, **extra), body

        if method not in ("GET", "HEAD"):  # methods are case-sensitive: "get" is not GET
            return text(405, b"read-only: only GET and HEAD\n", Allow="GET, HEAD")
        host = headers.get("host")
        if host is not None and not HOST.fullmatch(host):
            # A page elsewhere that rebinds its name to 127.0.0.1 cannot read us.
            return text(403, b"forbidden host\n")
        path = target.split("?", 1)[0]
        if path not in ("/", "/index.html", "/json"):
            return text(404, b"not found (try / or /json)\n")
        try:
            conn = store.connect()
            try:
                snap = dash.gather(conn, project)
            finally:
                conn.close()
        except OrchError as e:
            return text(503, f"{e}\n".encode())
        if path == "/json":
            return 200, dict(HEADERS, **{"Content-Type": "application/json"}), \
                dash.json_text(snap).encode()
        return 200, dict(HEADERS, **{"Content-Type": "text/html; charset=utf-8"}), \
            dash.html(snap).encode()

    try:
        sock = httpd.listen("127.0.0.1", port)
    except OSError as e:
        raise OrchError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}",
                        UNAVAILABLE) from None
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    with sock:
        httpd.serve(sock, answer, f"{PROG}/{__version__}")
    return 0


def run():
    cli.launch(PROG, main)
