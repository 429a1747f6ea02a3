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
SLS := $(shell find salt orch reactor -name '*.sls' 2>/dev/null)

.PHONY: setup host-packages demo test lint unit integration bench down

setup: host-packages $(VENV)/.installed
	$(LABCTL) build

host-packages:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }

# The venv lives outside /root (lab hosts and service users run its python).
$(VENV)/.installed: setup.cfg | host-packages
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(REQUIREMENTS)
	touch $@

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
	$(PY) -m pytest tests || { rc=$$?; [ $$rc -ne 5 ] || echo "no tests collected" >&2; exit $$rc; }

demo: setup
	$(PY) lab/demo.py

bench: setup
	$(PY) benchmarks/lab.py
	$(PY) benchmarks/vitals.py
	$(PY) benchmarks/web.py
	$(PY) benchmarks/mttr.py

down:
	$(LABCTL) down
