"""What every orch command line shares: parsing, exit statuses, output, errors.

Rules: stdout carries data only; every diagnostic is one line on stderr,
"PROG: error: ...".  A user error never shows a traceback.  A closed pipe ends
the program silently with 141, Ctrl-C silently with 130.  Output never changes
shape with the terminal; only colour does, and NO_COLOR turns it off.
"""

import os
import sys

from . import errors
from .errors import OrchError

PLACEHOLDER = "\x00free"


def parse(doc, argv, version, free=None):
    """Parse ARGV against the docopt usage DOC.

    FREE maps a verb to the number of fixed positionals after which every word
    is free text (a note, a command), taken verbatim even if it starts with
    '-': docopt never sees those words, and they come back as args["FREE"].
    """
    from docopt import DocoptExit, docopt
    tail = None
    if free and argv and argv[0] in free:
        head, tail = split_free(doc, argv[1:], free[argv[0]])
        argv = [argv[0], *head, *([PLACEHOLDER] if tail else [])]
    try:
        args = docopt(doc, argv, version=version)
    except DocoptExit as e:
        usage = str(e.code)[str(e.code).find("Usage:"):]
        raise OrchError(f"the command line does not parse\n{usage}".rstrip(),
                        errors.USAGE) from None
    args["FREE"] = tail
    return args


def split_free(doc, words, n_fixed):
    """Split WORDS where the free text begins: after N_FIXED positional words,
    skipping options and the values of options that take one."""
    from docopt import parse_docstring_sections, parse_options
    sections = parse_docstring_sections(doc)
    takes_value = set()
    for opt in parse_options(sections.before_usage) + parse_options(sections.after_usage):
        if opt.argcount:
            takes_value.update(n for n in (opt.short, opt.longer) if n)
    i = seen = 0
    while i < len(words) and seen < n_fixed:
        word = words[i]
        if word.startswith("-") and word != "-":
            i += 2 if word in takes_value else 1
            continue
        seen += 1
        i += 1
    return words[:i], words[i:]


def main(prog, body, argv):
    """Run BODY(argv) -> status, turning every failure into a one-line message and its status."""
    try:
        return body(argv)
    except OrchError as e:
        message = str(e)
        first, _, rest = message.partition("\n")
        print(f"{prog}: error: {first}", file=sys.stderr)
        if rest:  # only usage errors carry more: the usage text itself
            print(rest, file=sys.stderr)
        return e.status
    except SystemExit as e:  # docopt's --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as e:  # noqa: BLE001 - a bug: say where, briefly
        if type(e).__module__ == "sqlite3":
            from .store import translate
            err = translate(e)
            print(f"{prog}: error: {err}", file=sys.stderr)
            return err.status
        tb = e.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        print(f"{prog}: internal error: {type(e).__name__}: {e} (at {where})", file=sys.stderr)
        return errors.SOFTWARE


def _broken_pipe():
    # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 141


def launch(prog, body):
    """Entry point for a launcher or console script: exit with BODY's status."""
    status = main(prog, body, sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = _broken_pipe()
    sys.exit(status)


# --- output -------------------------------------------------------------------

def colour_on(stream=None):
    stream = stream or sys.stdout
    return not os.environ.get("NO_COLOR") and stream.isatty()


def porcelain_field(value):
    """One porcelain field: None -> '', and tab, newline, CR, backslash escaped."""
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = (text.replace("\\", "\\\\").replace("\t", "\\t")
                .replace("\n", "\\n").replace("\r", "\\r"))
    return text


def print_porcelain(rows):
    out = sys.stdout
    for row in rows:
        out.write("\t".join(porcelain_field(v) for v in row) + "\n")


def print_json(obj):
    import json
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def truncate(text, width):
    """Shorten TEXT to WIDTH characters with an ellipsis; newlines shown as a symbol."""
    text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n").replace("\n", "⏎").replace("\t", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def print_table(rows, headers, width=80):
    """A plain table; the last column is truncated so that no line exceeds WIDTH."""
    from tabulate import tabulate
    if not rows:
        return
    rows = [[cli_cell(v) for v in row] for row in rows]
    room = max(len(r[-1]) for r in rows)
    while True:
        cut = [r[:-1] + [truncate(r[-1], room)] for r in rows]
        text = tabulate(cut, headers=headers, tablefmt="plain", disable_numparse=True)
        excess = max(len(line) for line in text.splitlines()) - width
        if excess <= 0 or room <= 8:
            break
        room = max(room - excess, 8)
    sys.stdout.write(text + "\n")


def cli_cell(value):
    return "" if value is None else str(value)
