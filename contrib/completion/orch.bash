# bash completion for orch-sched, orch-lock, orch-sync, orch-dash and orch-team.
# Generated from each tool's usage text by contrib/completion/generate: do not
# edit.  zsh: see orch.zsh.  Enable by hand with: source orch.bash

_orch_offered() {  # TOOL VERB: the words and options offered after them
	case "$1 $2" in
	"orch-sched add") printf '%s' '--in= --at= --every= --key= --account= --catch-up= --grace= --retries= --batch --help' ;;
	"orch-sched list") printf '%s' '--all --status= --json --porcelain --help' ;;
	"orch-sched show") printf '%s' '--json --help' ;;
	"orch-sched cancel") printf '%s' '--help' ;;
	"orch-sched run") printf '%s' '--dry-run --help' ;;
	"orch-sched daemon") printf '%s' '--detach --help' ;;
	"orch-sched status") printf '%s' '--json --help' ;;
	"orch-sched log") printf '%s' '--limit= --json --porcelain --help' ;;
	"orch-sched prune") printf '%s' '--older= --help' ;;
	"orch-sched limits") printf '%s' '--json --porcelain clear set --until= --resume-note= --help' ;;
	"orch-sched check") printf '%s' '--json --help' ;;
	"orch-sched import-seed") printf '%s' '--help' ;;
	"orch-sched ") printf '%s' 'add list show cancel run daemon status log prune limits check import-seed --help --version' ;;
	"orch-lock run") printf '%s' '-n -w -E -m --help' ;;
	"orch-lock who") printf '%s' '--json --porcelain --help' ;;
	"orch-lock new") printf '%s' '--json --help' ;;
	"orch-lock ls") printf '%s' '--all --json --porcelain --help' ;;
	"orch-lock end") printf '%s' '--help' ;;
	"orch-lock prune") printf '%s' '--older= --delete --help' ;;
	"orch-lock ") printf '%s' 'run who new ls end prune --help --version' ;;
	"orch-sync install") printf '%s' '--repo= --help' ;;
	"orch-sync uninstall") printf '%s' '--repo= --help' ;;
	"orch-sync run") printf '%s' '--repo= --help' ;;
	"orch-sync daemon") printf '%s' '--detach --repo= --help' ;;
	"orch-sync now") printf '%s' '--repo= --json --porcelain --help' ;;
	"orch-sync status") printf '%s' '--repo= --json --porcelain --help' ;;
	"orch-sync conflicts") printf '%s' '--repo= --json --porcelain --help' ;;
	"orch-sync map") printf '%s' '--help' ;;
	"orch-sync unmap") printf '%s' '--help' ;;
	"orch-sync ") printf '%s' 'install uninstall run daemon now status conflicts map unmap --help --version' ;;
	"orch-dash ") printf '%s' '--project= --json --porcelain --output= --html= --watch -n line serve --help --version' ;;
	"orch-dash line") printf '%s' '--ascii --project= --help' ;;
	"orch-dash serve") printf '%s' '--port= --project= --help' ;;
	"orch-team up") printf '%s' '--dry-run --json --help' ;;
	"orch-team down") printf '%s' '--keep-worktrees --help' ;;
	"orch-team ls") printf '%s' '--json --porcelain --help' ;;
	"orch-team ") printf '%s' 'up down ls --help --version' ;;
	esac
}

_orch_live() {  # TOOL VERB: values worth offering, cheaply
	case "$1 $2" in
	"orch-sched show" | "orch-sched cancel" | "orch-sched log")
		orch-sched list --porcelain 2>/dev/null | cut -f1 ;;
	"orch-lock who") orch-lock who --porcelain 2>/dev/null | cut -f1 ;;
	"orch-lock end") orch-lock ls --porcelain 2>/dev/null | cut -f1 ;;
	"orch-sched add" | "orch-sched check" | "orch-sync map")
		case ${ORCH_TMUX_SOCKET-} in
		'') set -- ;;
		*/*) set -- -S "$ORCH_TMUX_SOCKET" ;;
		*) set -- -L "$ORCH_TMUX_SOCKET" ;;
		esac
		tmux "$@" list-windows -a -F '#{session_name}:#{window_index}' 2>/dev/null ;;
	esac
}

_orch() {
	local tool=${COMP_WORDS[0]##*/} cur=${COMP_WORDS[COMP_CWORD]} verb='' i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) verb=${COMP_WORDS[i]}; break ;;
		esac
	done
	if [[ -z $verb || $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_orch_offered "$tool" "$verb")" -- "$cur")
		[[ ${COMPREPLY[0]-} == *= ]] && compopt -o nospace 2>/dev/null
		return 0
	fi
	mapfile -t COMPREPLY < <(compgen -W "$(_orch_offered "$tool" "$verb" | tr ' ' '\n' | grep -v '^-') $(_orch_live "$tool" "$verb")" -- "$cur")
	[[ ${#COMPREPLY[@]} -eq 0 ]] && mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	return 0
}

complete -F _orch orch-sched orch-lock orch-sync orch-dash orch-team
