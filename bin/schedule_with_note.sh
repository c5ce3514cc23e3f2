#!/bin/sh
# schedule_with_note.sh [MINUTES [NOTE [TARGET]]]
# Schedule a check-in: in MINUTES (default 3, fractional allowed) type
# "SCHEDULED CHECK-IN: NOTE" into tmux TARGET (default $ORCH_DEFAULT_TARGET,
# else $TMO_DEFAULT_SESSION:$TMO_DEFAULT_WINDOW as the original read them, else
# tmux-orc:0).  A drop-in for the original script, stored by orch-sched so it
# survives reboots; see schedule_with_note.sh(1).
set -u
prog=schedule_with_note.sh
minutes=${1:-3}
note=${2:-Standard check-in}
target=${3:-${ORCH_DEFAULT_TARGET:-${TMO_DEFAULT_SESSION:-tmux-orc}:${TMO_DEFAULT_WINDOW:-0}}}

die() { printf '%s: error: %s\n' "$prog" "$2" >&2; exit "$1"; }

# orch-sched beside this script (a checkout, make install, pip), else on PATH.
here=$(dirname -- "$(readlink -f -- "$0" 2>/dev/null || printf '%s' "$0")")
if [ -x "$here/orch-sched" ]; then sched=$here/orch-sched; else sched=orch-sched; fi
command -v "$sched" >/dev/null 2>&1 || die 69 "orch-sched not found"

case $minutes in
  ''|.|*[!0-9.]*|*.*.*) die 65 "bad MINUTES: '$minutes' (want a number of minutes, e.g. 30 or 0.5)" ;;
esac
case $target in
  ''|-*) die 65 "bad TARGET: '$target' (want session, session:window or session:window.pane)" ;;
esac

id=$("$sched" add --in "$minutes" "$target" "SCHEDULED CHECK-IN: $note") || exit $?
[ -n "$id" ] || die 74 "orch-sched add printed no task id"

# Same rule as orch-sched(1), FILES: the state directory.
state=${ORCH_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/orch}
note_file=${ORCH_NOTE_FILE:-$state/next_check_note.txt}
# Written to a fresh temporary file beside it (mktemp: never a planted link), then renamed.
if tmp=$(mktemp "$note_file.XXXXXX" 2>/dev/null) &&
   printf '=== Next Check Note (%s) ===\nScheduled for: %s minutes\n\n%s\n' \
     "$(date)" "$minutes" "$note" >"$tmp" && mv -f -- "$tmp" "$note_file"; then :; else
  [ -n "${tmp:-}" ] && rm -f -- "$tmp"
  printf '%s: warning: could not write %s (the check-in is scheduled)\n' "$prog" "$note_file" >&2
fi

start=$(date +%s)
secs=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 0.5 }')
printf 'Scheduling check in %s minutes with note: %s\n' "$minutes" "$note"
printf 'Scheduled successfully: orch-sched task %s for %s\n' "$id" "$target"
printf 'SCHEDULED TO RUN AT: %s (in %s minutes from %s)\n' \
  "$(date -d "@$((start + secs))" +%H:%M:%S)" "$minutes" "$(date -d "@$start" +%H:%M:%S)"

# A check-in must never sit unseen in the queue: make sure a daemon runs.
if [ "${ORCH_NO_AUTOSTART:-0}" != 1 ]; then
  "$sched" daemon --detach >/dev/null ||
    printf '%s: warning: could not start the orch-sched daemon; run "orch-sched daemon"\n' "$prog" >&2
fi
exit 0
