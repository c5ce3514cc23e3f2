"""Pane states: what a pane's screen says about typing a check-in into it now.

Rules:
- classify() is a pure function of the captured screen (capture-pane -p text),
  the clock, and the pane's foreground program as procs.py found it.  It
  returns one state and the line that decided it (the evidence).
- The states, by precedence: shell > limited > transient > dialog > busy >
  draft > ready > unknown.  Only ready and unknown may be typed into: unknown
  is a program with no layout here, which keeps working as it always has.
- Agent layouts are data (LAYOUTS): a new agent or a changed wording is one
  entry, not code.  GENERIC_DIALOG and GENERIC_BUSY apply to every program.
- The input line is the lowest line matching a layout's `input` pattern with
  at most `below` non-blank lines under its block (the footer).  A `framed`
  input sits right under a horizontal rule and its block runs to the next
  rule: that is what tells Claude Code's input box from an earlier prompt in
  its history, which starts with the same `❯`.
- A dialog replaces or covers the input box while it is open, and one
  answered earlier stays in the scrollback above the box: dialog markers count
  only below the input block, or anywhere in the bottom LIVE_LINES non-blank
  lines when no input line is visible.  Busy markers count on the status
  lines: the BUSY_ABOVE non-blank lines right above the input and everything
  below it (Codex and Gemini draw them above, Claude Code below), or the
  bottom lines when no input is visible; an agent's prose further up that
  says "esc to interrupt" is not a status line.
- An input line whose prompt says the program is in a mode of its own (Claude
  Code's `!` shell mode, Gemini's `!`) is not empty whatever follows: what is
  typed there runs as a shell command.
- An input is empty when nothing follows its marker or the text is one of the
  layout's placeholders: capture-pane drops the dim style that tells a
  placeholder from typed text, so they are listed.
- Lines are compared with trailing spaces removed (capture-pane trims them
  anyway), but a no-break space is kept: Claude Code's empty input reads
  `❯` + U+00A0, and a trimmed `❯` alone is empty too.
"""

import re
from collections import namedtuple

from . import clock, limits

LIVE_LINES = 15
BUSY_ABOVE = 4
MAX_DRAFT_LINES = 200  # how far above its footer a long draft may push an input line
STATES = ("shell", "limited", "transient", "dialog", "busy", "draft", "ready", "unknown")
TYPABLE = ("ready", "unknown")

_RULE = re.compile(r"\s*[─━]{8,}\s*$")

# One program's screen.  input: its input line, a pattern whose group `text` is what the line
# holds; framed: the input sits between two rules; below: how many non-blank lines (footer,
# popups) may follow the input block; continuation: the further lines of a draft, if the
# program indents them; placeholders: what an empty input shows; echo: a submitted prompt
# stays in the history with the input's marker (so, right above the input with nothing
# after it, the turn has begun); repl: a line-oriented prompt, where the terminal's cursor is
# the input point; busy, dialog: the program's own markers, besides the generic ones.
# An input pattern's group `mode`, where it matched, is a prompt other than the usual one.
Layout = namedtuple("Layout", "name input framed below continuation placeholders echo repl "
                               "busy dialog")


def _any(*patterns):
    return tuple(re.compile(p) for p in patterns)


# Every program's dialogs: menus, questions, modals.  Matched anywhere in a line.
GENERIC_DIALOG = _any(
    r"\b[Ee]nter(?:/\S+)? to (?:confirm|select|continue|set\b|choose|accept|proceed|apply|save"
    r"|view)",
    r"\b[Ee]sc(?:ape)? to (?:cancel|close|go back|exit|dismiss)\b(?!,\s*\d)",
    r"\b[Pp]ress [Ee]nter to\b|\(Use Enter to select\)",
    r"\benter (?:select|continue)\b|\besc back\b|↑/↓ to (?:navigate|select)|(?:^|\s)↓ to select\b",
    r"\([Yy]\)es/\([Nn]\)o|\[[Yy]/[Nn]\]|\([Yy]/[Nn]\)|\[[Yy]es/[Nn]o\]",
    r"\bDo you want to (?:proceed|make this edit|create|allow|run|trust)\b",
    r"\bDo you trust the files\b|\bAllow execution\b|\bWaiting for (?:user|your) confirmation\b",
    r"\bYes, allow (?:once|always)\b|\bYes, and don't ask again\b",
)
# A numbered menu with its selection marker on one option (`❯ 1. Yes`, `● 2. No`):
# a dialog when another numbered option stands next to it (see _dialog).
# (One run of blanks per gap: two adjacent \s* backtrack quadratically on a padded line.)
_SELECTED = re.compile(r"\s*(?:[│┃]\s*)?[❯›>●▶→]\s*\d{1,2}\.\s+\S")
_OPTION = re.compile(r"\s*(?:[│┃]\s*)?(?:[❯›>●▶→]\s*)?\d{1,2}\.\s+\S")

# A program that shows another machine's terminal: what runs there is read from the screen,
# and a shell prompt on its last line means a shell.
REMOTE = frozenset({"ssh", "mosh-client", "et", "telnet", "autossh"})
SHELL_PROMPT = re.compile(
    r"(?:\[?[\w.-]+@[\w.-]+(?:[: ][^\s]*)?\]?|(?:ba|z|k)?sh-[\d.]+)\s?[$#%>] ?")

# The status line's own forms (`  esc to interrupt`, `(5s · esc to interrupt)`), not prose.
GENERIC_BUSY = _any(
    r"(?:^\s*|[(·•]\s*)esc to interrupt\b",
    r"\(esc to cancel, \d+[smh]",
)

LAYOUTS = (
    Layout(
        "claude",
        input=re.compile(r"(?:❯|(?P<mode>[!#]))(?:[\u00a0 ](?P<text>.*))?$"),
        framed=True, below=40, continuation=None,
        placeholders=("Press up to edit queued messages",), echo=True, repl=False,
        busy=_any(r"^[✢✳✶✻✽·*] \S.*…", r"^[✢✳✶✻✽·*] .*\bRetrying in \d+s\b"),
        dialog=_any(r"\bEnter to set as default\b", r"\bTab to amend\b",
                    r"\bShowing detailed transcript\b", r"\bctrl\+o to toggle\b",
                    r"^\s*search prompts:"),
    ),
    Layout(
        "claude-box",  # Claude Code 1.x: the input in a rounded box
        input=re.compile(r"│ >(?: (?P<text>[^│]*[^│ ]))? *│"),
        framed=False, below=6, continuation=None, placeholders=(), echo=False, repl=False,
        busy=_any(r"^[✢✳✶✻✽·*] \S.*…"), dialog=(),
    ),
    Layout(
        "codex",
        input=re.compile(r"› ?(?P<text>.*)$"),
        framed=False, below=12, continuation=re.compile(r"  (?P<text>\S.*)"),
        placeholders=("Ask Codex to do anything",),
        echo=True, repl=False,
        busy=_any(r"^\s*(?:\S\s+)?Working \(\d+[smh]"),
        dialog=_any(r"\bWould you like to (?:run|make|apply)\b"),
    ),
    Layout(
        "gemini",
        input=re.compile(r" (?:>|(?P<mode>!))(?: +(?P<text>.*\S))? *"),
        framed=False, below=16, continuation=re.compile(r"   (?P<text>\S.*)"),
        placeholders=("Type your message or @path/to/file", "Type your shell command"),
        echo=True, repl=False,
        busy=_any(r"^\s*[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \S"),
        dialog=_any(r"\bApply this change\?", r"\bAllow execution\b"),
    ),
    Layout(
        "aider",
        input=re.compile(r"(?:[a-z-]+)?>(?!>)(?: (?P<text>.*))?$"),
        framed=False, below=8, continuation=None, placeholders=(), echo=False, repl=True,
        busy=_any(r"^\s*[░█▒▓]+\s+Waiting for \S"),
        dialog=_any(r"\(D\)on't ask again", r"\[Yes\]: ?$", r"\[No\]: ?$"),
    ),
    Layout(
        "ipython",
        input=re.compile(r"In \[\d+\]: ?(?P<text>.*)$"),
        framed=False, below=0, continuation=re.compile(r"\s+\.\.\.: ?(?P<text>.*)$"),
        placeholders=(), echo=False, repl=True, busy=(), dialog=(),
    ),
    Layout(
        "python",  # the plain REPL and ptpython
        input=re.compile(r">>> ?(?P<text>.*)$"),
        framed=False, below=3, continuation=re.compile(r"\.\.\. ?(?P<text>.*)$"),
        placeholders=(), echo=False, repl=True, busy=(), dialog=(),
    ),
)

# collections.namedtuple: see limits.Detection for why not a dataclass.
_Fields = namedtuple("PaneState", "state evidence layout limit text start", defaults=(None, None))


class PaneState(_Fields):
    """The state of a pane, the line that decided it, the layout recognised (or
    None), for limited/transient the usage-limit Detection, and where an input
    line was found its text (placeholders read as empty) and screen row."""

    __slots__ = ()

    @property
    def typable(self):
        return self.state in TYPABLE

    def as_json(self):
        limit = self.limit
        return {"state": self.state, "evidence": self.evidence, "layout": self.layout,
                "kind": limit.kind if limit else None,
                "reset": clock.iso(limit.reset) if limit else None,
                "menu": bool(limit and limit.menu)}

    def describe(self):
        """A short phrase for the log: `dialog open ("Esc to cancel")`."""
        what = {"dialog": "dialog open", "busy": "agent busy",
                "draft": "text in the input"}.get(self.state, self.state)
        return f"{what} ({_quote(self.evidence)})" if self.evidence else what


def _quote(text):
    return '"' + (text if len(text) <= 80 else text[:79] + "…") + '"'


def classify(screen, now, foreground=None, allowed=None, cursor=None, local_tz=None):
    """SCREEN (capture-pane -p text) at NOW -> PaneState.

    FOREGROUND is procs.Foreground (or None: a screen alone, say from stdin).
    ALLOWED, if given, is the set of foreground command names that may get
    check-ins (ORCH_AGENT_COMMANDS): anything else counts as a shell.  CURSOR
    is the screen row of the terminal's cursor, if known: a line-oriented
    prompt (a `repl` layout) with the cursor below it has been submitted and
    is running, however much it looks like a draft.
    """
    if foreground is not None:
        if foreground.shell:
            return PaneState("shell", f"the pane runs {foreground.command} at its prompt",
                             None, None)
        if allowed and foreground.command not in allowed:
            return PaneState("shell", f"the pane runs {foreground.command}, "
                             "not one of ORCH_AGENT_COMMANDS", None, None)
        if foreground.command in REMOTE:
            last = next((line for line in reversed(screen.split("\n")) if line.strip()), "")
            if SHELL_PROMPT.fullmatch(last.rstrip(" ")):
                return PaneState("shell", f"{foreground.command} shows a shell prompt: "
                                 f"{_tidy(last)}", None, None)
    seen = limits.detect(screen, now, local_tz)
    if seen.state in ("limited", "transient"):
        return PaneState(seen.state, seen.line or "rate-limit options menu", None, seen)

    lines = [line.rstrip(" ") for line in screen.split("\n")]
    live = _live(lines)
    found = _input(lines, live)
    layout, start, end, text = found if found else (None, None, None, None)
    name = layout.name if layout else None

    # With no input line in sight, the program is not known: every layout's markers count.
    region = range(end + 1, len(lines)) if found else live
    dialog = _dialog(lines, region, (layout,) if found else LAYOUTS)
    seen = {"text": text, "start": start}
    if dialog is not None:
        return PaneState("dialog", dialog, name, None, **seen)
    busy = GENERIC_BUSY + tuple(p for lay in ((layout,) if found else LAYOUTS) for p in lay.busy)
    for i in _status_lines(lines, live, start, framed=found and layout.framed):
        for pattern in busy:
            if pattern.search(lines[i]):
                return PaneState("busy", _tidy(lines[i]), name, None, **seen)
    if found is None:
        if foreground is not None and foreground.command in REMOTE:
            return PaneState("shell", f"{foreground.command} shows no agent's input line",
                             None, None)
        return PaneState("unknown", None, None, None)
    echo = _echo(lines, start, layout)
    if echo is not None:
        return PaneState("busy", f"{echo} (just sent, no answer yet)", name, None, **seen)
    if layout.repl and cursor is not None and cursor > end:
        return PaneState("busy", f"{_tidy(lines[start])} (running: the cursor is below it)",
                         name, None, **seen)
    if text:
        return PaneState("draft", _tidy(lines[start]), name, None, **seen)
    return PaneState("ready", _tidy(lines[start]), name, None, **seen)


# --- a note on screen -------------------------------------------------------------------------

# How agents fold a long paste in their input: Claude Code, Codex, Gemini CLI.
_FOLDED = re.compile(r"\[Pasted (?:text #\d+(?: \+\d+ lines)?|Content \d+ chars|Text: \d+ lines)\]")


def _compact(text):
    return "".join(text.split())


def holds(state, note):
    """True if STATE's input line holds NOTE (wrapped, folded into a paste
    placeholder, or showing only its end after scrolling), as typed by orch."""
    if not state.text:
        return False
    text = state.text.removeprefix("❯").strip()
    if _FOLDED.fullmatch(text.split("\n")[0].strip()):
        return True
    # (Codex marks a scrolled input with an arrow; what shows may be any part of the note.)
    seen, whole = _compact(text.replace("↑", "").replace("↓", "")), _compact(note)
    return bool(seen) and (seen == whole or (len(seen) >= 4 and seen in whole))


def submitted(screen, state, note):
    """True if NOTE shows above STATE's input line: the agent took it into its
    transcript.  The note's first line is looked for, as much of it as fits
    in a line (long notes wrap)."""
    if state.start is None:
        return False
    first = _compact(next((line for line in note.split("\n") if line.strip()), ""))[:40]
    if not first:
        return False
    lines = screen.split("\n")[:state.start]
    return any(first in _compact(line) for line in lines)


def _status_lines(lines, live, start, framed):
    """Where busy markers count: the BUSY_ABOVE non-blank lines above the input
    (above its top rule, if framed) and all below it; the bottom lines if no input."""
    if start is None:
        return live
    above, i = [], start - 1 - bool(framed)
    while i >= 0 and len(above) < BUSY_ABOVE:
        if lines[i].strip():
            above.append(i)
        i -= 1
    return above[::-1] + [j for j in range(start, len(lines)) if lines[j].strip()]


def _live(lines):
    """The indexes of the bottom LIVE_LINES non-blank lines, top to bottom."""
    live = []
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip():
            live.append(i)
            if len(live) == LIVE_LINES:
                break
    return live[::-1]


def _input(lines, live):
    """The lowest input line of any layout -> (layout, first, last line of its
    block, its text without placeholders), or None."""
    if not live:
        return None
    last = live[-1]
    under = [0] * (last + 1)  # under[i]: the non-blank lines below line i
    for i in range(last - 1, -1, -1):
        under[i] = under[i + 1] + bool(lines[i + 1].strip())
    best = None
    for layout in LAYOUTS:
        got = _input_of(layout, lines, last, under)
        if got is not None and (best is None or got[0] > best[1]):
            best = (layout, *got)
    return best


def _input_of(layout, lines, last, under):
    for i in range(last, -1, -1):
        if under[i] > layout.below + MAX_DRAFT_LINES:
            return None
        m = layout.input.fullmatch(lines[i])
        if m is None:
            continue
        if layout.framed and not (i > 0 and _RULE.match(lines[i - 1])):
            continue
        texts = [m.group("text") or ""]
        mode = m.groupdict().get("mode")
        end = i
        if layout.framed:
            end = next((j for j in range(i + 1, last + 1) if _RULE.match(lines[j])), None)
            if end is None:
                continue
            texts += lines[i + 1:end]
        elif layout.continuation is not None:
            while end < last and (c := layout.continuation.fullmatch(lines[end + 1])):
                texts.append(c.group("text") or "")
                end += 1
        if under[end] > layout.below:
            continue
        text = "\n".join(t.strip() for t in texts).strip()
        if text in layout.placeholders:
            text = ""
        if mode:
            text = f"{mode} {text}".rstrip()  # shell mode: never empty
        return i, end, text
    if layout.framed:
        return _tall_draft(layout, lines, last, under)
    return None


def _tall_draft(layout, lines, last, under):
    """A framed input whose draft is taller than the screen: its top rule and
    prompt have scrolled off, leaving only indented draft lines above the
    bottom rule -> (first line, bottom rule, text) or None."""
    rules = [j for j in range(last, -1, -1) if under[j] <= layout.below and _RULE.match(lines[j])]
    if not rules:
        return None
    bottom = rules[0]
    body = [line for line in lines[:bottom] if line.strip()]
    if body and all(line.startswith("  ") and not _RULE.match(line) for line in body):
        first = next(j for j in range(bottom) if lines[j].strip())
        return first, bottom, "\n".join(line.strip() for line in body)
    return None


def _echo(lines, start, layout):
    """The prompt just submitted, if the first line above the input box is its
    echo in the history: the agent has taken it and not answered yet (Codex
    shows nothing else for its first seconds)."""
    if not layout.echo:
        return None
    i = start - 1 - layout.framed  # a framed box: skip its top rule
    while i >= 0 and not lines[i].strip():
        i -= 1
    m = layout.input.fullmatch(lines[i]) if i >= 0 else None
    if m is None or layout.framed and i > 0 and _RULE.match(lines[i - 1]):
        return None  # (an earlier input box, not an echo)
    text = (m.group("text") or "").strip()
    return _tidy(lines[i]) if text and text not in layout.placeholders else None


def _dialog(lines, region, layouts):
    """The line in REGION that best shows an open dialog, tidied, or None."""
    markers = _markers(layouts)
    region = list(region)
    # A footer ("Enter to confirm · Esc to cancel") says more than the options above it.
    for i in reversed(region):
        if markers.search(lines[i]):
            return _tidy(lines[i])
    options = [i for i in region if _OPTION.match(lines[i])]
    for i in region:
        if _SELECTED.match(lines[i]) and any(j != i and abs(j - i) <= 3 for j in options):
            return _tidy(lines[i])
    return None


_MARKERS = {}


def _markers(layouts):
    """The dialog markers of LAYOUTS and every program, as one pattern (one search a line)."""
    key = tuple(layout.name for layout in layouts)
    if key not in _MARKERS:
        patterns = GENERIC_DIALOG + tuple(p for layout in layouts for p in layout.dialog)
        _MARKERS[key] = re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    return _MARKERS[key]


def _tidy(line):
    """A screen line as evidence: stripped, box sides and runs of padding dropped."""
    return re.sub(r"\s{3,}", "  ", line.replace("\u00a0", " ").strip().strip("│┃").strip())
