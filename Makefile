# havip: one entry point for installing, testing, benchmarking and the lab.
# Every target installs what it needs (Debian packages and a virtualenv), so a fresh
# Debian machine needs nothing but `make` and root.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEBS   := docker.io keepalived tcpdump iproute2 iputils-ping procps util-linux psmisc systemd python3-venv
PYTEST_ARGS ?=

.PHONY: all deps venv test unit lab demo lab-down bench bench-fence install check clean

all: test

# Debian packages: installed only when one is missing, so repeated runs are quick.
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: deps venv
	$(PY) -m pytest -ra $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

# The built-in lab: two hosts and a client in network namespaces, one dockerd and one
# Milvus container per host, havip on both, a failover shown to a client.
demo: deps venv
	$(VENV)/bin/havip lab demo

lab: deps venv
	$(VENV)/bin/havip lab up

lab-down: venv
	$(VENV)/bin/havip lab down

# Side by side with keepalived on the same timers, then Milvus failover in the lab.
bench: deps venv
	$(PY) bench/failover.py --out docs/benchmarks.md
	$(PY) bench/milvus_failover.py --out docs/benchmarks-milvus.md
	$(PY) bench/milvus_failover.py --vrrp 3:0.1 --out docs/benchmarks-milvus-v3.md
	$(PY) bench/fence.py --out docs/benchmarks-fence.md

bench-fence: deps venv
	$(PY) bench/fence.py --out docs/benchmarks-fence.md

check: venv
	$(VENV)/bin/havip check-config conf/master.yaml
	$(VENV)/bin/havip check-config conf/backup.yaml

install: deps venv
	install -d /etc/havip
	install -m 0644 conf/master.yaml conf/backup.yaml /etc/havip/
	install -m 0644 systemd/havip@.service /etc/systemd/system/havip@.service
	ln -sf $(abspath $(VENV))/bin/havip /usr/local/bin/havip
	ln -sf $(abspath $(VENV))/bin/havipctl /usr/local/bin/havipctl

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
