# The two commands of the README:
#   make demo   set up .venv, generate the 30-circuit sweep, run it locally, merge, plot threshold.png
#   make test   set up .venv (with the test extra), lint (ruff), type-check (mypy), run the test suite
#   make fast   the daily loop: ruff, mypy and the tests not marked slow (about a minute)
#   make watch-demo  while `make demo` runs: the live page of its sweep, http://127.0.0.1:8787/
#   make lock  re-resolve pyproject's ranges to today's releases and rewrite constraints.txt
# The demo installs only what it runs (qec-kiln without extras); the test extra is added on top.
# Every install takes its versions from constraints.txt (the lock: what CI passed with), so a new
# upstream release cannot change what `make test` tests; users installing the package get
# pyproject's compatible ranges instead.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
KILN   := $(VENV)/bin/qec-kiln
STAMP      := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
VIEW_STAMP := $(VENV)/.installed-view
LOCK   := constraints.txt
PIP    := $(PY) -m pip install --quiet --constraint $(LOCK)
DEMO   := demo
# Small targets so the demo ends in a few minutes on 2 cores.
DEMO_SHOTS  ?= 500_000
DEMO_ERRORS ?= 500

.PHONY: install install-test demo test fast lint bench clean slurm-deps browser-deps sky-deps watch-demo lock

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	touch $(TEST_STAMP)

$(VIEW_STAMP): $(STAMP)
	$(PIP) -e '.[view]'
	touch $(VIEW_STAMP)

# Refresh the lock: uv resolves pyproject's ranges (every extra the tests and the demo install,
# and the local SkyPilot's own venv of .ci/sky-local.sh) to the newest releases for every Python
# that requires-python allows (pins differ by python_version where releases do), and
# constraints.txt pins all of it. Then `make clean test`, read the diff, commit constraints.txt.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet uv
	sed -n 's/^SKY_VERSION=\(.*\)/skypilot[slurm]==\1/p' .ci/sky-local.sh >$(LOCK_VENV)/extra.in
	printf 'uv\npip\n' >>$(LOCK_VENV)/extra.in
	floor=$$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$$/\1/p' pyproject.toml); \
	{ echo "# The lock: exact versions of everything \`make test\`, \`make demo\` and .ci/sky-local.sh"; \
	  echo "# install (pip --constraint), resolved by uv from pyproject.toml's ranges for Python >= $$floor"; \
	  echo "# (universal: a pin with a marker holds where its marker does)."; \
	  echo "# Regenerate with \`make lock\`; do not edit by hand (tests/test_lock.py checks it)."; \
	  $(LOCK_VENV)/bin/uv pip compile --quiet --universal --python-version "$$floor" \
		--no-header --no-annotate pyproject.toml $(LOCK_VENV)/extra.in \
		--extra test --extra view --extra skypilot --extra tsim; \
	} >$(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) examples/generate_surface_codes.py --out $(DEMO)/circuits
	./scripts/launch.sh $(DEMO)/circuits --decoders pymatching --max-shots $(DEMO_SHOTS) \
		--max-errors $(DEMO_ERRORS) --bucket $(DEMO)/bucket --name demo
	$(KILN) status --bucket $(DEMO)/bucket --sweep demo
	$(PY) scripts/merge.py --bucket $(DEMO)/bucket --out $(DEMO)/merged.csv
	$(VENV)/bin/sinter plot --in $(DEMO)/merged.csv --x_func "m.p" --group_func "{'sort': m.d, 'label': f'd={m.d}'}" \
		--xaxis "[log]physical error rate p" --fig_size 1024 768 \
		--title "rotated surface code memory (qec-kiln demo)" --out $(DEMO)/threshold.png
	@echo "demo: $(DEMO)/merged.csv and $(DEMO)/threshold.png"

# The demo's sweep as a live page (Ctrl-C stops it; the demo itself opens nothing).
watch-demo: $(VIEW_STAMP)
	$(KILN) watch --bucket $(DEMO)/bucket --sweep demo

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests scripts examples bench
	$(VENV)/bin/mypy

# As root, the tests also start a real single-node Slurm cluster: install its Debian packages once.
slurm-deps:
	@if [ "$$(id -u)" = 0 ] && ! command -v slurmctld >/dev/null 2>&1; then .ci/slurm.sh install; fi

# As root, the page tests drive Debian's headless chromium: install it and its driver once.
browser-deps:
	@if [ "$$(id -u)" = 0 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then \
		.ci/browser.sh install; fi

# As root, the tests also run a real SkyPilot (API server, jobs controller, its Slurm infra on
# that cluster, sshd on 127.0.0.1): its Debian packages and its own venv (.ci/.sky-venv), once.
sky-deps:
	@if [ "$$(id -u)" = 0 ]; then .ci/sky-local.sh install; fi

# The real SkyPilot's tests mostly wait (cold clusters take minutes to provision) while the rest
# of the suite computes: they start first, in a pytest of their own (their own servers, and a
# Slurm cluster of SkyPilot's own), and run beside lint and the suite; `make test` fails when
# any fails. Lint's and their output follow the suite's.
SKY_TESTS := tests/test_sky_real.py
# The suite runs serially beside lint and the SkyPilot module by default: on 2 cores every part of
# this machine's work is CPU (SkyPilot's local clusters run here too). Measured from a clean
# clone (CONTRIBUTING.md): serially, the suite took 24 to 27 min beside it; on 2 pytest-xdist
# workers at nice 10 (the SkyPilot module first), 27.6 min. TEST_WORKERS=N runs it on N workers, for a
# machine with more cores; the modules of one costly fixture share a worker (XDIST_GROUPS in
# tests/conftest.py). Timed goals live in bench/: load slows tests, never fails them.
TEST_WORKERS ?= 0
FAST_WORKERS ?= 2
# sh starts a background command with SIGINT ignored, and Python then never raises
# KeyboardInterrupt: give it back its default, so that Ctrl-C (or the trap below) still runs the
# fixtures' teardown (the SkyPilot server, its Slurm cluster, its jobs).
export UNIGNORE_SIGINT := import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); \
	os.execv(sys.argv[1], sys.argv[1:])
# The Debian packages first, one after another (apt takes one lock, even under `make -j`); then
# the two venvs (the tests' and the local SkyPilot's, each a few minutes of pip) side by side
# (sky-deps' own apt step then finds its packages installed, or installs sshd and rsync alone).
test:
	@$(MAKE) --no-print-directory -j1 slurm-deps browser-deps
	@$(MAKE) --no-print-directory -j2 install-test sky-deps
	@log=$$(mktemp); lintlog=$$(mktemp); \
	$(PY) -c "$$UNIGNORE_SIGINT" $(VENV)/bin/pytest -p no:cacheprovider $(SKY_TESTS) \
		>"$$log" 2>&1 & sky=$$!; \
	$(MAKE) --no-print-directory lint >"$$lintlog" 2>&1 & lint=$$!; \
	trap 'kill -INT $$sky 2>/dev/null; kill $$lint 2>/dev/null; wait $$sky; rm -f "$$log" "$$lintlog"; exit 130' INT TERM; \
	start=$$(date +%s); \
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --deselect $(SKY_TESTS); suite=$$?; \
	echo "make test: the suite took $$(( $$(date +%s) - start )) s"; \
	wait $$lint; lintrc=$$?; \
	echo "================ lint (ruff, mypy), run beside the suite ================"; \
	cat "$$lintlog"; rm -f "$$lintlog"; \
	wait $$sky; skyrc=$$?; \
	echo "================ $(SKY_TESTS), run beside the suite ================"; \
	cat "$$log"; rm -f "$$log"; \
	echo "make test: $$(( $$(date +%s) - start )) s; the suite exited $$suite, lint $$lintrc, $(SKY_TESTS) $$skyrc"; \
	test $$suite -eq 0 && test $$lintrc -eq 0 && test $$skyrc -eq 0

# The fast loop for daily work: no test marked slow (end-to-end sweeps, servers, Slurm).
fast: lint
	$(VENV)/bin/pytest -n $(FAST_WORKERS) -m "not slow" -q

bench: $(STAMP)
	$(PY) bench/balance.py

clean:
	rm -rf $(VENV) $(DEMO) kiln-results .pytest_cache .ruff_cache .ci/.sky-venv $(LOCK_VENV)
