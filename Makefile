# hpd-salt. On a fresh Debian 12 machine, as root:
#   make demo   build the lab, highstate it, print what runs where
#   make test   lint, unit tests, then integration tests on a lab of their own
# Both install what they need first (Debian packages, the venv, the lab's base).

VENV ?= /opt/hpd-salt/venv
export HPD_VENV := $(VENV)
PY := $(VENV)/bin/python3
LABCTL := lab/labctl
# python3-whisper: the unit tests of _states/whisper.py run its whisper-resize.
# wrk: the load of benchmarks/web.py.
APT_PACKAGES := python3 python3-venv systemd-container debootstrap iproute2 apt-utils \
  python3-whisper wrk
REQUIREMENTS := $(shell sed -n '/^install_requires =/,/^$$/p' setup.cfg | tail -n +2)
VENV_LOCKS := lock/venv-build.txt lock/venv.txt
PIP := $(VENV)/bin/pip -qq --disable-pip-version-check
# The locks' one resolver (uv: a single binary, resolves in seconds, writes
# pip's requirements format with every file's hash). The hosts and the lab run
# Debian 12's python3, 3.11 on Linux.
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
  --python-platform linux --custom-compile-command 'make lock'
SLS := $(shell find salt orch reactor -name '*.sls' 2>/dev/null)

.PHONY: setup host-packages demo test lint unit integration bench down lock

setup: host-packages $(VENV)/.installed
	$(LABCTL) build

host-packages:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { echo "installing $(APT_PACKAGES)" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  $(APT_PACKAGES) >/dev/null; }

# The venv lives outside /root (lab hosts and service users run its python).
# Only from the locks, with hashes: first what the two source-only packages
# (salt, timelib) need to build, then everything, built without build isolation
# (an isolated build would fetch the newest setuptools). -qq: this machine's pip
# config warns about each of its extra indexes that lacks a package.
$(VENV)/.installed: $(VENV_LOCKS) | host-packages
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r lock/venv-build.txt
	$(PIP) install --require-hashes --no-build-isolation -r lock/venv.txt
	$(PIP) check || $(VENV)/bin/pip check
	touch $@

# Update the locks from their inputs (setup.cfg's install_requires,
# lock/venv-build.in, example/requirements.in) with uv, keeping every pin the
# inputs still allow; LOCK_ARGS='--upgrade-package NAME' (or --upgrade) moves on.
lock: $(VENV)/.installed
	printf '%s\n' $(REQUIREMENTS) | $(UV_COMPILE) $(LOCK_ARGS) - -o lock/venv.txt
	$(UV_COMPILE) $(LOCK_ARGS) -c lock/venv.txt lock/venv-build.in -o lock/venv-build.txt
	$(UV_COMPILE) $(LOCK_ARGS) example/requirements.in -o example/requirements.txt

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/salt-lint $(SLS)

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

# pytest exits 5 when it collected no test: here that means a broken suite.
test: setup lint
	$(PY) -m pytest -m "not drill" tests || { rc=$$?; [ $$rc -ne 5 ] || echo "no tests collected" >&2; exit $$rc; }

# The long drills (pytest marker drill) make test leaves out: run them before a release.
drills: setup
	$(PY) -m pytest -m drill tests/integration

demo: setup
	$(PY) lab/demo.py

bench: setup
	$(PY) benchmarks/lab.py
	$(PY) benchmarks/vitals.py
	$(PY) benchmarks/web.py
	$(PY) benchmarks/mttr.py

down:
	$(LABCTL) down
