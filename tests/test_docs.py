"""README.md's tool table says what the TOOLS section of man/orch.7 says, and lists
every tool that has a page.

The table is generated from orch.7: `python3 tests/test_docs.py --write` rewrites the
README's lines between the `<!-- tools` and `<!-- /tools -->` markers (backticks
added around words in the README are allowed; they are ignored when comparing).
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OPEN, CLOSE = "<!-- tools", "<!-- /tools -->"
HEADER = ["| tool | what it does |", "| --- | --- |"]


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def plain(text):
    """mdoc text as it reads: escapes resolved, whitespace collapsed."""
    for escape, char in (("\\(em", "—"), ("\\-", "-"), ("\\&", ""), ("\\e", "\\")):
        text = text.replace(escape, char)
    return " ".join(text.split())


def man_tools():
    """[(tool, description)] from the TOOLS section of man/orch.7, in its order."""
    page = read("man/orch.7")
    section = page.split("\n.Sh TOOLS\n", 1)[1].split("\n.Sh ", 1)[0]
    tools, words = [], None
    for line in section.splitlines():
        m = re.fullmatch(r"\.It Xr (\S+) \d", line)
        if m:
            words = []
            tools.append((m.group(1), words))
        elif line.startswith("."):
            assert line in (".Bl -tag -width Ds", ".El"), \
                f"orch.7 TOOLS: keep descriptions plain text, not {line!r}"
        elif words is not None:
            words.append(line)
    return [(tool, plain(" ".join(words))) for tool, words in tools]


def readme_section():
    text = read("README.md")
    start = text.index(OPEN)
    start = text.index("\n", start) + 1
    end = text.index(CLOSE, start)
    return text, start, end


def readme_tools():
    text, start, end = readme_section()
    rows = text[start:end].splitlines()
    assert rows[:2] == HEADER, rows[:2]
    tools = []
    for row in rows[2:]:
        m = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", row)
        assert m, f"README.md tools table: unexpected row {row!r}"
        tools.append((m.group(1), " ".join(m.group(2).replace("`", "").split())))
    return tools


def table(tools):
    return "\n".join([*HEADER, *(f"| `{tool}` | {text} |" for tool, text in tools)]) + "\n"


def test_readme_tool_table_equals_orch_7():
    expected = man_tools()
    assert readme_tools() == expected, (
        "README.md's tool table differs from man/orch.7; run `python3 tests/test_docs.py "
        f"--write`, or make it:\n{table(expected)}")


def test_every_tool_with_a_page_is_in_orch_7():
    pages = sorted(p[:-2] for p in os.listdir(os.path.join(ROOT, "man")) if p.endswith(".1"))
    assert sorted(tool for tool, _ in man_tools()) == pages
    assert all(text for _, text in man_tools())


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python3 tests/test_docs.py --write")
    text, start, end = readme_section()
    with open(os.path.join(ROOT, "README.md"), "w", encoding="utf-8") as f:
        f.write(text[:start] + table(man_tools()) + text[end:])
