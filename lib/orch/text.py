"""Text as orch shows it: fields for porcelain, cells and tables for people, and
any string made safe for a terminal.

Rules: nothing from outside (a note, a path, a branch, a file name, git's
message) reaches a terminal with its control characters: escape sequences,
carriage returns and the like show as U+FFFD, and a newline as a symbol, so
each record stays one line.  Widths count terminal columns (wide characters
take two).  Used by the command lines and by the domain modules that render
views (the dashboard, the sync status file); it imports nothing of orch.
"""

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def porcelain_field(value):
    """One porcelain field: None -> '', and tab, newline, CR, backslash escaped."""
    if value is None:
        return ""
    return str(value).translate(_ESCAPES)


def truncate(text, width):
    """Shorten TEXT to WIDTH characters with an ellipsis; newlines shown as a symbol."""
    text = visible("" if text is None else str(text))
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table_lines(rows, headers, width=80, sample=1000):
    """A plain table, columns two spaces apart, as lines (none without rows); the
    last column is truncated so that no line exceeds WIDTH.  ROWS may be any
    iterable: the column widths come from its first SAMPLE rows, and the rest
    are formatted as they come (a later, wider cell pushes its own line only),
    so a table of any length takes the memory of SAMPLE rows.  (Written here
    rather than with tabulate, whose import alone costs four times an
    interpreter's start-up.)"""
    from itertools import islice
    rows = iter(rows)
    first = [[cell(v) for v in row] for row in islice(rows, sample)]
    if not first:
        return
    widths = [max(text_width(r[i]) for r in [headers, *first]) for i in range(len(headers) - 1)]
    room = max(width - sum(widths) - 2 * len(widths), 8)

    def line(row):
        cells = [c + " " * max(w - text_width(c), 0)
                 for c, w in zip(row[:-1], widths, strict=True)]
        return "  ".join([*cells, truncate(row[-1], room)]).rstrip()

    for row in [headers, *first]:
        yield line(row)
    for row in rows:
        yield line([cell(v) for v in row])


def text_width(text):
    """Terminal columns TEXT takes: wide (East Asian) characters count two."""
    if text.isascii():
        return len(text)
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cell(value):
    return "" if value is None else visible(str(value))


_CONTROLS = {c: "\ufffd" for c in [*range(0x20), 0x7f, *range(0x80, 0xa0)]}
_CONTROLS.update({ord("\n"): "⏎", ord("\t"): " "})


_CONTROLS_BUT_LINES = {**_CONTROLS, ord("\n"): "\n", ord("\t"): "\t"}


def visible(text, lines=False):
    """TEXT safe to show on a terminal: control characters (escape sequences,
    carriage returns) as U+FFFD; newlines as ⏎ and tabs as spaces, unless
    LINES keeps them."""
    return text.replace("\r\n", "\n").translate(_CONTROLS_BUT_LINES if lines else _CONTROLS)
