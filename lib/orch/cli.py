"""What every orch command line shares: parsing, exit statuses, output, errors.

Rules: stdout carries data only; every diagnostic is one line on stderr,
"PROG: error: ...".  A user error never shows a traceback.  A closed pipe ends
the program silently with 141, Ctrl-C silently with 130.  Output never changes
shape with the terminal; only colour does, and NO_COLOR turns it off.
"""

import errno
import os
import sys

from . import errors
from .errors import OrchError
from .text import porcelain_field, table_lines, visible

PLACEHOLDER = "\x00free"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file size limit; all are 74


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
    if "-h" in argv or "--help" in argv:
        sys.stdout.write(doc.strip("\n") + "\n")
        raise SystemExit(0)
    try:
        args = docopt(_for_verb(doc, argv[0] if argv else None), argv, version=version)
    except DocoptExit as e:
        usage = str(e.code)[str(e.code).find("Usage:"):]
        raise OrchError(f"the command line does not parse\n{usage}".rstrip(),
                        errors.USAGE) from None
    args["FREE"] = tail
    check_utf8(args)
    return args


def _for_verb(doc, verb):
    """DOC with only VERB's usage patterns, when it has any: docopt then matches
    one pattern instead of trying every verb's (and its errors show that verb's
    usage only).  Other verbs' keys are absent from the result, so callers test
    them with args.get()."""
    head, sep, rest = doc.partition("Usage:\n")
    usage, gap, options = rest.partition("\n\n")
    lines = usage.split("\n")
    prog = lines[0].split()[0]
    keep, keeping = [], False
    for line in lines:
        words = line.split()
        if words and words[0] == prog:
            keeping = len(words) > 1 and words[1] == verb
        if keeping:
            keep.append(line)
    if not keep:
        return doc
    return head + sep + "\n".join(keep) + gap + options


def integer(text, what, low=0, high=2**63 - 1):
    """TEXT as an integer in LOW..HIGH (ASCII digits only), else OrchError 65."""
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise OrchError(f"bad {what}: {text!r} (want a whole number from {low} to {high})",
                        errors.DATAERR)
    return int(text)


def check_utf8(args):
    """Every string in ARGS must be valid UTF-8: argv bytes that are not reach
    Python as lone surrogates, which SQLite, JSON and tmux cannot take."""
    for key, value in args.items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise OrchError(f"{key}: {text.encode('utf-8', 'surrogateescape')!r} "
                                    "is not valid UTF-8", errors.DATAERR) from None


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
        # (A path or a name in it came from outside: no control character reaches
        # the terminal, and the message stays one line.)
        print(f"{prog}: error: {visible(first)}", file=sys.stderr)
        if rest:  # only usage errors carry more: the usage text itself
            print(rest, file=sys.stderr)
        return e.status
    except SystemExit as e:  # docopt's --help / --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as e:
        if e.errno not in DISK_FULL:
            return _bug(prog, e)
        # A full disk (or quota) anywhere: the user's to fix, not a bug.
        where = f" ({e.filename})" if e.filename else ""
        print(f"{prog}: error: {e.strerror}{where}", file=sys.stderr)
        return errors.IOERR
    except Exception as e:  # noqa: BLE001 - a bug: say where, briefly
        return _bug(prog, e)


def _bug(prog, e):
    """E, an exception no code expected, as one line: what and where; sqlite's as 74/75."""
    if type(e).__module__ == "sqlite3":
        from .store import translate
        err = translate(e)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.status
    tb = e.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
    print(f"{prog}: internal error: {type(e).__name__}: {visible(str(e))} (at {where})",
          file=sys.stderr)
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


def _write_chunks(lines, size=1000):
    """Write LINES (each ending in a newline) SIZE at a time: output of any length
    in bounded memory."""
    from itertools import islice
    lines = iter(lines)
    while True:
        chunk = "".join(islice(lines, size))
        if not chunk:
            return
        sys.stdout.write(chunk)


def print_porcelain(rows):
    _write_chunks("\t".join([porcelain_field(v) for v in row]) + "\n" for row in rows)


def print_json(obj):
    import json
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def print_json_array(items):
    """ITEMS (any iterable) as print_json would print their list, written as they come."""
    import json

    def lines():
        empty = True
        for item in items:
            text = json.dumps(item, ensure_ascii=False, indent=2).replace("\n", "\n  ")
            yield ("[\n  " if empty else ",\n  ") + text
            empty = False
        yield "[]\n" if empty else "\n]\n"

    _write_chunks(lines())


def print_table(rows, headers, width=80):
    _write_chunks(line + "\n" for line in table_lines(rows, headers, width))


