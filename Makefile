# orch: make deps | test | demo | install | uninstall | lint | man | clean
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= python3
VENV = .venv
VPY = $(VENV)/bin/python
BINDIR = $(DESTDIR)$(PREFIX)/bin
LIBDIR = $(DESTDIR)$(PREFIX)/lib/orch
SHAREDIR = $(DESTDIR)$(PREFIX)/share/orch
MANDIR = $(DESTDIR)$(PREFIX)/share/man
BASHCOMPDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
TOOLS = orch-sched orch-lock orch-sync orch-dash orch-team
SCRIPTS = $(TOOLS) schedule_with_note.sh

.PHONY: deps test demo install uninstall lint man clean venv

# What the tests and the demo need that a fresh Debian/Ubuntu machine may lack
# (tmux, git, groff, Chromium, python3-venv): installed as root, else the one
# command to run is printed.  DRY_RUN=1 only prints it (and fails if anything
# is missing).  See .ci/deps.
deps:
	@PYTHON=$(PYTHON) sh .ci/deps $(if $(DRY_RUN),--dry-run)

$(VENV)/.installed: setup.cfg pyproject.toml bin/schedule_with_note.sh | deps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,lint,bench]'
	touch $@

venv: $(VENV)/.installed

test: deps $(VENV)/.installed
	$(VPY) -m pytest -q

demo: deps $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh contrib/demo.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check --line-length 100 --select E,F,W,B,I,UP --target-version py311 lib tests bench/* bin/orch-*
	for page in man/*.[0-9]; do groff -mandoc -ww -z "$$page" || exit 1; done
	$(VENV)/bin/shellcheck bin/schedule_with_note.sh hooks/* contrib/*.sh

# The installed launchers find the package in $(PREFIX)/lib/orch and its
# runtime dependencies in $(PREFIX)/lib/orch/vendor (pip --target), so the
# tools run with the system python3 and need nothing else installed.
install:
	install -d $(BINDIR) $(LIBDIR)/orch/sync $(SHAREDIR)/hooks $(MANDIR)/man1 $(MANDIR)/man7
	install -m 644 lib/orch/*.py $(LIBDIR)/orch/
	install -m 644 lib/orch/sync/*.py $(LIBDIR)/orch/sync/
	$(PYTHON) -m compileall -q $(LIBDIR)/orch
	$(PYTHON) -m pip install -q --no-compile --target $(LIBDIR)/vendor docopt-ng
	for s in $(SCRIPTS); do install -m 755 bin/$$s $(BINDIR)/; done
	for h in hooks/*; do [ -f "$$h" ] && install -m 755 "$$h" $(SHAREDIR)/hooks/ || true; done
	for page in man/*.1; do install -m 644 "$$page" $(MANDIR)/man1/; done
	for page in man/*.7; do [ -f "$$page" ] && install -m 644 "$$page" $(MANDIR)/man7/ || true; done
	install -d $(SHAREDIR)/completion $(BASHCOMPDIR)
	install -m 644 contrib/completion/orch.bash contrib/completion/orch.zsh $(SHAREDIR)/completion/
	for t in $(TOOLS); do install -m 644 contrib/completion/orch.bash $(BASHCOMPDIR)/$$t; done

uninstall:
	for s in $(SCRIPTS); do rm -f $(BINDIR)/$$s; done
	rm -rf $(LIBDIR) $(SHAREDIR)
	for t in $(TOOLS); do rm -f $(BASHCOMPDIR)/$$t; done
	for page in man/*.1; do rm -f $(MANDIR)/man1/$${page#man/}; done
	for page in man/*.7; do rm -f $(MANDIR)/man7/$${page#man/}; done

man:
	for page in man/*.[0-9]; do groff -mandoc -Tutf8 "$$page" | less -R; done

clean:
	rm -rf $(VENV) build dist lib/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
