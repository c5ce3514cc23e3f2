# zsh completion for orch's tools, through zsh's bash-completion layer: the
# same orch.bash (generated from each tool's usage text) serves both shells.
# Enable it from ~/.zshrc, after compinit:
#   source $PREFIX/share/orch/completion/orch.zsh
autoload -Uz bashcompinit && bashcompinit
source "${${(%):-%x}:A:h}/orch.bash"
