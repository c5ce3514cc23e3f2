"""The pane classifier (orch.panes) on real screens, alone and through `orch-sched check`.

Every screen in tests/data/screens/ was captured from a real agent program; INDEX.tsv says the
state it must get.  The same screens are then shown in real tmux panes by the stand-in agent and
read back with `orch-sched check TARGET`.  The hand-made screens below are variants the captures
do not have: other widths, other dialogs, other wordings.
"""

import csv
import json
import os
from pathlib import Path

import pytest
from conftest import wait_until
from orch.panes import STATES, classify
from orch.procs import Foreground

DATA = Path(__file__).parent / "data" / "screens"
INDEX = list(csv.DictReader(open(DATA / "INDEX.tsv", encoding="utf-8"), delimiter="\t"))
NOW = 1795636800.0
NBSP = "\u00a0"


def screen(name):
    return (DATA / name).read_text(encoding="utf-8")


def test_the_index_covers_every_program_and_state():
    assert len(INDEX) >= 100
    assert {r["program"] for r in INDEX} >= {"claude", "codex", "gemini", "aider", "ipython",
                                             "ptpython"}
    for program in ("claude", "codex", "gemini", "aider"):
        assert {r["state"] for r in INDEX if r["program"] == program} == {
            "ready", "busy", "dialog", "draft"}, program
    assert sorted(p.name for p in DATA.glob("*.txt")) == sorted(r["file"] for r in INDEX)


@pytest.mark.parametrize("row", INDEX, ids=[r["file"] for r in INDEX])
def test_real_screen(row):
    cursor = int(row["cursor"]) if row["cursor"] else None
    got = classify(screen(row["file"]), NOW, cursor=cursor)
    assert got.state == row["state"], got
    assert got.evidence  # the line that decided, for the log


def test_every_real_screen_through_check_on_stdin(run):
    # One process per screen would take a minute: a sample of every program and state,
    # but for the running prompts that only the cursor tells apart (a screen alone has none).
    seen = set()
    for row in INDEX:
        key = (row["program"], row["state"])
        if (row["cursor"] and row["state"] == "busy") or key in seen:
            continue
        seen.add(key)
        r = run("orch-sched", "check", "--json", "-", stdin=screen(row["file"]))
        got = json.loads(r.stdout)
        assert got["state"] == row["state"], row["file"]
        assert r.returncode == (0 if row["state"] == "ready" else 1), row["file"]
    assert len(seen) >= 19  # 6 programs x 4 states, less what only the cursor tells


def test_real_screens_replayed_into_panes_through_check(tmux, run, tmp_path):
    rows = INDEX[::3]
    agents = []
    for i, row in enumerate(rows):
        text = screen(row["file"]).rstrip("\n")
        lines = text.split("\n")
        width = max(len(line) for line in lines)
        path = tmp_path / f"s{i}.txt"
        path.write_text(text, encoding="utf-8")
        # A pane as wide as the capture and one line taller, so that nothing wraps or scrolls.
        tmux("-f", "/dev/null", "new-session", "-d", "-s", f"r{i}", "-x", str(width),
             "-y", str(len(lines) + 1), "sleep 600")
        cursor = int(row["cursor"]) if row["cursor"] else None
        agents.append((row, tmux.agent(f"r{i}", "w", screen=str(path), cursor=cursor),
                       lines[-1].strip()))
    for row, agent, last in agents:
        wait_until(lambda a=agent, t=last: t in a.screen(), what=f"{row['file']} drawn")
        r = run("orch-sched", "check", "--json", agent.target)
        assert json.loads(r.stdout)["state"] == row["state"], row["file"]
        assert r.returncode == (0 if row["state"] == "ready" else 1)


# --- variants the captures do not have ------------------------------------------------------

def claude(*middle, width=80, footer="  ? for shortcuts"):
    rule = "─" * width
    return "\n".join(["╭─── Claude Code ───╮", "", *middle, rule, f"❯{NBSP}", rule, footer, "",
                      ""])


def state(text, **kw):
    return classify(text, NOW, **kw).state


def test_claude_at_other_widths_and_with_a_trimmed_input():
    for width in (40, 80, 300):
        assert state(claude(width=width)) == "ready"
    trimmed = claude().replace(f"❯{NBSP}\n", "❯\n")   # capture-pane may trim the space
    assert state(trimmed) == "ready"
    plain = claude().replace(f"❯{NBSP}\n", "❯ \n")
    assert state(plain) == "ready"
    assert state(claude().replace(f"❯{NBSP}\n", f"❯{NBSP}half a thought\n")) == "draft"
    assert state(claude().replace(f"❯{NBSP}\n", f"❯{NBSP}/\n")) == "draft"


def test_claude_history_prompt_is_not_the_input():
    # Its earlier prompts start with `❯ ` too; only the one between the rules is the input.
    text = claude("❯ Please report the build status", "", "● All green.", "")
    assert state(text) == "ready"
    just_sent = claude("❯ Please report the build status", "")
    assert classify(just_sent, NOW).state == "busy"


def test_claude_permission_prompt_and_trust_dialog_have_no_input_box():
    permission = "\n".join([
        "● Bash(rm -rf build)", "", "╭" + "─" * 60 + "╮", "│ Bash command" + " " * 48 + "│",
        "│   rm -rf build" + " " * 45 + "│", "│ Do you want to proceed?" + " " * 37 + "│",
        "│ ❯ 1. Yes" + " " * 51 + "│",
        "│   2. Yes, and don't ask again for rm commands in this project │",
        "│   3. No, and tell Claude what to do differently (esc)        │",
        "╰" + "─" * 60 + "╯", ""])
    got = classify(permission, NOW)
    assert got.state == "dialog"
    trust = "\n".join([" Accessing workspace:", "", " /home/dev/src/app", "",
                       " ❯ 1. Yes, I trust this folder", "   2. No, exit", "",
                       " Enter to confirm · Esc to cancel", ""])
    got = classify(trust, NOW)
    assert (got.state, got.evidence) == ("dialog", "Enter to confirm · Esc to cancel")


def test_a_dialog_answered_earlier_stays_harmless_in_the_scrollback():
    text = claude(" ❯ 1. Yes, I trust this folder", "   2. No, exit",
                  " Enter to confirm · Esc to cancel", "", "● Trusted.", "")
    assert state(text) == "ready"


def test_busy_beats_draft_and_dialog_beats_busy():
    busy_with_draft = claude("✶ Pondering… (4s · esc to interrupt)", "",
                             footer="  esc to interrupt").replace(f"❯{NBSP}\n", f"❯{NBSP}next\n")
    assert state(busy_with_draft) == "busy"
    menu_over_busy = "\n".join([
        "⠼ Thinking... (esc to cancel, 3s)", "╭" + "─" * 30 + "╮",
        "│ ● 1. Auto                    │", "│   2. Pro                     │",
        "╰" + "─" * 30 + "╯", "(Press Esc to close)", ""])
    assert state(menu_over_busy) == "dialog"


def test_generic_dialogs_of_programs_without_a_layout():
    for question in ("Overwrite config.toml? [y/N]", "Continue? (y/n)",
                     "  Use ↑/↓ to navigate, enter to select", "Press Enter to continue..."):
        assert state(f"some program\n\n{question}\n") == "dialog", question
    assert state("some program\n\nlast line of output\n") == "unknown"
    assert state("") == "unknown"


def test_codex_and_gemini_drafts_over_several_lines():
    codex = screen("codex-idle.txt").replace(
        "› Ask Codex to do anything", "› first line\n  second line\n  third line")
    assert state(codex) == "draft"
    gemini = screen("gemini-idle.txt").replace(
        " >   Type your message or @path/to/file", " > first line\n   second line")
    assert state(gemini) == "draft"


def test_aider_question_at_the_bottom_is_a_dialog():
    question = "Drop src/x.py from the chat? (Y)es/(N)o [Yes]:"
    text = screen("aider-idle.txt").rstrip("\n") + "\n" + question
    assert state(text) == "dialog"


def test_limits_come_before_dialogs_and_shells_before_everything():
    menu = ("  ⎿  You've hit your limit · resets 5pm (UTC)\n\n  ❯ 1. Stop and wait for limit to "
            "reset\n    2. Upgrade your plan\n\n  Enter to confirm · Esc to cancel\n")
    got = classify(menu, NOW)
    assert (got.state, got.limit.menu) == ("limited", True)
    shell = Foreground("bash", True, ())
    assert state(screen("claude-idle.txt"), foreground=shell) == "shell"
    assert state(menu, foreground=shell) == "shell"
    agent = Foreground("node", False, ("bash",))
    assert state(screen("claude-idle.txt"), foreground=agent) == "ready"
    assert state(screen("claude-idle.txt"), foreground=agent, allowed={"claude"}) == "shell"
    assert state(screen("claude-idle.txt"), foreground=agent, allowed={"node"}) == "ready"


def test_over_ssh_the_screen_tells_a_shell():
    ssh = Foreground("ssh", False, ())
    for prompt in ("dev@build-01:~/src/app$ ", "[dev@build-01 app]$", "root@box:/# ",
                   "bash-5.2$ "):
        assert state(f"Last login: Mon\n{prompt}\n", foreground=ssh) == "shell", prompt
    assert state(screen("claude-idle.txt"), foreground=ssh) == "ready"
    # A local program's screen is not read for a prompt: its process says what it is.
    assert state("dev@build-01:~/src/app$ \n", foreground=Foreground("node", False, ())) \
        == "unknown"


def test_a_limit_sample_marked_ok_is_neither_limited_nor_transient():
    samples = Path(__file__).parent / "data" / "usage-limit"
    oks = [p for p in samples.glob("*.txt") if p.read_text().startswith("expect: ok")]
    assert len(oks) >= 10
    for path in oks:
        text = path.read_text(encoding="utf-8").partition("\n---\n")[2]
        assert state(text) not in ("limited", "transient"), path.name


def test_states_are_the_documented_ones():
    assert STATES == ("shell", "limited", "transient", "dialog", "busy", "draft", "ready",
                      "unknown")
    assert os.path.exists(DATA / "README.md")


def test_shell_modes_of_agents_are_never_empty_inputs():
    # Claude Code's `!` and Gemini's `!` run what is typed as a shell command.
    bang = claude().replace(f"❯{NBSP}\n", f"!{NBSP}\n")
    got = classify(bang, NOW)
    assert got.state == "draft" and got.evidence == "!"
    gemini = screen("gemini-idle.txt").replace(
        " >   Type your message or @path/to/file", " !   Type your shell command")
    assert state(gemini) == "draft"


def test_a_draft_taller_than_the_screen_is_a_draft():
    words = [f"  word{i} and more words of a long draft" for i in range(80)]
    scrolled = "\n".join(words + ["─" * 80, "  ? for shortcuts", ""])
    assert state(scrolled) == "draft"
    tall = claude().replace(f"❯{NBSP}\n", f"❯{NBSP}start of it\n" + "\n".join(words) + "\n")
    assert state(tall) == "draft"


def test_prose_above_the_input_is_not_a_status_line():
    for prose in ("● If the build hangs you can press esc to interrupt it.",
                  "  * Loading the config…", "  · Waiting for CI…"):
        text = claude(prose, "", "● Done, it passes now.", "", "  Anything else?", "", "", "")
        assert state(text) == "ready", prose


def test_claude_transcript_and_history_search_are_dialogs():
    transcript = claude(footer="  Showing detailed transcript · ctrl+o to toggle")
    assert state(transcript) == "dialog"
    search = claude(footer="  search prompts: ")
    assert state(search) == "dialog"


def test_over_ssh_an_unknown_screen_is_not_typed_into():
    ssh = Foreground("ssh", False, ())
    assert state("some remote program\n\n$ \n", foreground=ssh) == "shell"
    assert state("some remote program\n\n$ \n") == "unknown"


def test_padded_lines_take_linear_time():
    # Patterns with two adjacent runs of blanks take quadratic time: this would not finish.
    for line in (" " * 200_000 + "x", "│ >" + " " * 200_000 + "x", " >" + " " * 200_000 + "x",
                 " " * 200_000 + "Working (3s", "─" * 200_000 + "x"):
        assert classify(line + "\n", NOW).state in STATES


def test_an_input_holding_the_note_it_was_given():
    from orch.panes import holds
    note = "line 1\nline 2\nline 3\n" + "\n".join(f"line {i}" for i in range(4, 41))
    draft = classify(screen("codex-idle.txt").replace("› Ask Codex to do anything",
                                                      "› line 13  ↑"), NOW)
    assert draft.state == "draft" and holds(draft, note)      # scrolled, with Codex's arrow
    folded = classify(claude().replace(f"❯{NBSP}\n", f"❯{NBSP}[Pasted text #2 +39 lines]\n"),
                      NOW)
    assert holds(folded, note)
    wrapped = classify(claude().replace(f"❯{NBSP}\n", f"❯{NBSP}please look at the\n"
                                        "  build and report\n"), NOW)
    assert holds(wrapped, "please look at the build and report")
    other = classify(claude().replace(f"❯{NBSP}\n", f"❯{NBSP}something else\n"), NOW)
    assert not holds(other, "please look at the build and report")
    assert not holds(classify(claude(), NOW), "anything")
