# natlab: `make matrix` (the main job) and `make test` (the suite). Both set up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := mininet bridge-utils net-tools nftables iproute2 iputils-ping coturn iperf3 \
	conntrack tcpdump python3-venv python3-pip python3-dev gcc openssl chromium \
	chromium-driver firefox-esr libnss3-tools golang-go golang-github-pion-ice.v2-dev \
	gir1.2-nice-0.1 python3-gi
PION_SOURCES := $(wildcard lab/agents/pion/agent/*.go lab/agents/pion/agent/go.mod)
STAMP := $(VENV)/.natlab-installed

.PHONY: setup test matrix bench clean lint

setup: $(STAMP)

# Idempotent: apt only runs when a package is missing; the venv and the
# editable install (which compiles the relay's C packet loop) are redone only
# when pyproject.toml, setup.py or the C source change.
$(STAMP): pyproject.toml setup.py relay/server/_datapath.c $(PION_SOURCES)
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,fast]'
	$(PY) -m lab.agents.pion.build
	@touch $(STAMP)

test: setup
	$(PY) -m pytest

# The default NAT x NAT matrix with our relay; prints where the report is.
matrix: setup
	$(VENV)/bin/natlab matrix --relay inrepo

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict relay lab reports bench scenarios

clean:
	@[ -x $(PY) ] && $(PY) -m lab.cleanup || /usr/bin/python3 -m lab.cleanup
