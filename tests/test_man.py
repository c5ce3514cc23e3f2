"""Each man page's SYNOPSIS is the tool's docopt usage, and each page lints clean."""

import importlib
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOOLS = {"orch-sched": "cmd_sched", "orch-lock": "cmd_lock", "orch-sync": "cmd_sync",
         "orch-dash": "cmd_dash", "orch-team": "cmd_team"}
PRESENT = [t for t, m in TOOLS.items()
           if os.path.exists(os.path.join(ROOT, "lib", "orch", f"{m}.py"))]


def usage_lines(text, prog):
    """The usage patterns, one per line, continuation lines joined, spaces normalised."""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == prog:
            lines.append(words)
        elif lines:
            lines[-1].extend(words)
    return [" ".join(w) for w in lines]


@pytest.mark.parametrize("tool", PRESENT)
def test_synopsis_matches_usage(tool):
    doc = importlib.import_module(f"orch.{TOOLS[tool]}").__doc__
    usage = doc.split("Usage:", 1)[1].split("\n\n", 1)[0]
    with open(os.path.join(ROOT, "man", f"{tool}.1"), encoding="utf-8") as f:
        page = f.read()
    synopsis = page.split(".Sh SYNOPSIS", 1)[1].split("\n.Sh ", 1)[0]
    block = re.search(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed", synopsis, re.S | re.M)
    assert block, f"{tool}.1: SYNOPSIS has no .Bd -literal block"
    text = block.group(1).replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
    assert usage_lines(text, tool) == usage_lines(usage, tool)


@pytest.mark.parametrize("page", sorted(p for p in os.listdir(os.path.join(ROOT, "man"))
                                        if re.search(r"\.\d$", p)))
def test_man_page_lints_clean(page):
    if not shutil.which("groff"):
        pytest.fail("groff is required for this test: run make deps")
    proc = subprocess.run(["groff", "-mandoc", "-ww", "-z", os.path.join(ROOT, "man", page)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def section(page, name):
    body = page.split(f"\n.Sh {name}\n", 1)
    assert len(body) == 2, f"no {name} section"
    return body[1].split("\n.Sh ", 1)[0]


def usage_options(doc):
    """The options of a docopt usage text's Options: section (help and version aside)."""
    block = doc.split("Options:", 1)[1]
    found = set()
    for line in block.splitlines():
        words = line.strip().split("  ")[0].split()
        if not words or not words[0].startswith("-"):
            continue
        for word in words:
            if word.startswith("-"):
                found.add(word.split("=")[0].rstrip(","))
    return found - {"-h", "--help", "--version"}


def page_options(page):
    """The options an OPTIONS section describes: every `Fl -x` of its item lines."""
    found = set()
    for line in section(page, "OPTIONS").splitlines():
        if line.startswith(".It "):
            found.update("-" + m for m in re.findall(r"Fl (\S+)", line))
    return {f.split("=")[0] for f in found}


@pytest.mark.parametrize("tool", PRESENT)
def test_options_section_matches_usage(tool):
    doc = importlib.import_module(f"orch.{TOOLS[tool]}").__doc__
    with open(os.path.join(ROOT, "man", f"{tool}.1"), encoding="utf-8") as f:
        page = f.read()
    assert page_options(page) == usage_options(doc)


def exit_codes(page):
    codes = set()
    for line in section(page, "EXIT STATUS").splitlines():
        if line.startswith(".It "):
            codes.update(int(n) for n in re.findall(r"\b(\d+)\b(?!\+)", line[4:]))
    return codes


def test_exit_status_tables_match_errors_py():
    from orch import errors
    defined = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, int)}
    shell = {126, 127, 130, 141}  # a wrapped command not runnable or not found, as in
    # sh(1); Ctrl-C; a closed pipe
    with open(os.path.join(ROOT, "man", "orch.7"), encoding="utf-8") as f:
        assert exit_codes(f.read()) == defined  # the shared table: every code, no other
    for tool in PRESENT:
        with open(os.path.join(ROOT, "man", f"{tool}.1"), encoding="utf-8") as f:
            codes = exit_codes(f.read())
        assert codes - defined <= shell, (tool, codes - defined)
        # What every tool can meet: its command line, the state directory and its files.
        assert {0, 64, 73, 74, 77} <= codes, (tool, {0, 64, 73, 74, 77} - codes)
