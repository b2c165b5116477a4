# imchat: `make run` starts the server on the embedded default (SQLite, no other service);
# `make test` runs the whole test suite. Both set up .venv themselves.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
# `make run` listens on this machine only; `HOST=0.0.0.0 make run` opens it to the network (the
# installed server's /etc/imchat/config.toml listens on every interface).
HOST ?= 127.0.0.1

.PHONY: run test lint bench binary release venv dev assets clean conformance

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependency list or a C part changes; `make run` needs only the server's own.
C_PARTS := app/service/search/_spacing.c app/service/search/_postings.c
$(VENV)/.installed: pyproject.toml $(C_PARTS) setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(C_PARTS) setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,browser,bench,binary]'
	touch $(VENV)/.installed $@

venv: $(VENV)/.installed

dev: $(VENV)/.installed-dev

run: venv assets
	IMCHAT_SERVER_HOST=$(HOST) $(BIN)/imchat serve --config $(CONFIG)

test: dev assets
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra
	AUTOBAHN_SUMMARY=$${TMPDIR:-/tmp}/imchat-autobahn-summary.md bash scripts/autobahn.sh

# WebSocket conformance (Autobahn|Testsuite fuzzingclient), refreshing docs/autobahn/summary.md;
# `make test` runs the same cases and keeps its summary out of the tree.
conformance: dev
	bash scripts/autobahn.sh

lint: dev
	$(BIN)/ruff check .

# One self-contained executable, dist/imchat (PyInstaller one-file); see docs/admin.md.
binary: dev assets
	bash scripts/build_binary.sh

# dist/imchat-<version>-linux-<arch>.tar.gz: the binary, install.sh, uninstall.sh, the unit, the
# kernel settings, config.toml and the admin guide; a server needs nothing else (docs/admin.md).
release: binary
	bash scripts/make_release.sh

bench: dev
	$(BIN)/python bench/run.py

# Third-party browser files come from the npm registry, pinned by package-lock.json; the Vue
# templates are compiled at the same step, so editing one rebuilds.
assets:
	@if [ -f package.json ]; then $(MAKE) --no-print-directory -s asset/vendor/.built; fi

asset/vendor/.built: package.json package-lock.json scripts/build_assets.sh scripts/compile_templates.js \
		$(wildcard asset/js/components/*.html)
	sh scripts/build_assets.sh
	touch $@

clean:
	rm -rf $(VENV) build dist node_modules asset/vendor asset/build *.egg-info
