"""Each man page's SYNOPSIS is the tool's docopt usage, and each page lints clean."""

import importlib
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOOLS = {"orch-sched": "cmd_sched", "orch-lock": "cmd_lock", "orch-sync": "cmd_sync",
         "orch-dash": "cmd_dash"}
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
        pytest.fail("groff is required (.ci/run installs it)")
    proc = subprocess.run(["groff", "-mandoc", "-ww", "-z", os.path.join(ROOT, "man", page)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
