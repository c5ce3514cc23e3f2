"""Shell completion: the bash script is what the generator makes of the usage texts
today, and bash (its real compgen) offers every verb and option of every tool."""

import importlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPT = os.path.join(ROOT, "contrib", "completion", "orch.bash")
TOOLS = {"orch-sched": "cmd_sched", "orch-lock": "cmd_lock", "orch-sync": "cmd_sync",
         "orch-dash": "cmd_dash", "orch-team": "cmd_team"}


def test_the_script_is_generated_from_the_usage_texts():
    fresh = subprocess.run([sys.executable, os.path.join(ROOT, "contrib", "completion",
                                                         "generate")],
                           capture_output=True, text=True, check=True).stdout
    with open(SCRIPT, encoding="utf-8") as f:
        assert f.read() == fresh, "run: contrib/completion/generate > contrib/completion/orch.bash"


def complete(line):
    """What bash offers for LINE (the word being completed is its last, maybe empty)."""
    words = line.split(" ")
    program = (f"source {SCRIPT}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
               f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; _orch; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    proc = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def usage(tool):
    doc = importlib.import_module(f"orch.{TOOLS[tool]}").__doc__
    text = doc.split("Usage:", 1)[1].split("\n\n", 1)[0]
    return [line.split()[1:] for line in text.splitlines() if line.split()[:1] == [tool]]


@pytest.mark.parametrize("tool", TOOLS)
def test_bash_offers_every_verb_and_option(tool):
    verbs = {words[0] for words in usage(tool) if re.fullmatch(r"[a-z][a-z-]*", words[0])}
    assert verbs <= complete(f"{tool} ")
    for words in usage(tool):
        verb = words[0] if words[0] in verbs else ""
        options = {m.group(1) + m.group(2) for m in
                   re.finditer(r"(?<![\w-])(--?[A-Za-z][\w-]*)(=?)", " ".join(words))
                   if m.group(1) not in ("-h", "--help", "--version")}
        offered = complete(f"{tool} {verb} -".replace("  ", " ") if verb else f"{tool} -")
        assert options <= offered, (tool, verb, options - offered)


def test_live_values_task_ids_and_lock_names(run):
    ids = [run("orch-sched", "add", "--in", "1h", "s:0", f"note {i}").stdout.strip()
           for i in range(2)]
    assert set(ids) == complete("orch-sched cancel ")
    assert complete("orch-sched show 1") == {i for i in ids if i.startswith("1")}
