#!/bin/sh
# make demo: a stand-in agent in a private tmux server gets a check-in scheduled
# through schedule_with_note.sh and typed by the orch-sched daemon.  Everything
# lives in a temporary directory; the daemon and the tmux server are stopped
# at the end, whatever happens.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/orch-demo.XXXXXX")
export ORCH_HOME="$work/state" ORCH_TMUX_SOCKET="$work/tmux.sock" ORCH_ENTER_DELAY=0.5
unset TMUX ORCH_NO_AUTOSTART ORCH_NOW
tmux_() { tmux -S "$ORCH_TMUX_SOCKET" "$@"; }

cleanup() {
  pid=$(orch-sched status --json 2>/dev/null | sed -n 's/.*"pid": \([0-9][0-9]*\).*/\1/p')
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  tmux_ kill-server 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }

say "a private tmux server with a stand-in agent in window demo:agent"
tmux_ -f /dev/null new-session -d -s demo -n agent "python3 '$top/tests/agent.py' '$work/received'"
i=0; until [ -e "$work/received" ]; do i=$((i + 1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done
tmux_ list-windows -t demo -F '#{session_name}:#{window_name} runs #{pane_current_command}'

say "schedule_with_note.sh 0.05 'Check the build; then run \$(make test)' demo:agent"
# shellcheck disable=SC2016 # the $(...) is part of the note, typed literally
schedule_with_note.sh 0.05 'Check the build; then run $(make test)' demo:agent

say "orch-sched list (the daemon was started by the script)"
orch-sched list

say "waiting for the daemon to type it (due in 3 s)..."
i=0
until grep -q 'make test' "$work/received" 2>/dev/null && [ "$(tail -c1 "$work/received" | od -An -c | tr -d ' ')" = '\r' ]; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "not delivered in 30 s" >&2; exit 1; }
  sleep 0.1
done

say "what the agent received (cat -v shows the Enter key as ^M)"
cat -v "$work/received"; echo

say "orch-sched list --all"
orch-sched list --all
say "orch-sched log"
orch-sched log
say "orch-sched status"
orch-sched status || true
say "done: stopping the daemon and the tmux server"
