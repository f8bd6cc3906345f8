# havip: one entry point for installing, testing, benchmarking and the lab.
# Every target installs what it needs (Debian packages and a virtualenv), so a fresh
# Debian 12 machine needs only root and what the README's quick start installs first
# (make, git, ca-certificates).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEBS   := docker.io keepalived nginx libnginx-mod-stream tcpdump iproute2 nftables iputils-ping procps \
          util-linux psmisc systemd python3-venv etcd-server etcd-client iptables openssl libfuse2
PYTEST_ARGS ?=

.PHONY: all deps venv test test-fuller unit fuzz loss lab demo lab-down bench bench-milvus bench-takeover bench-standalone bench-fence bench-recipe bench-pool bench-pool-overhead matrix-standalone soak install check clean fresh

all: test

# Debian packages: installed only when one is missing, so repeated runs are quick.
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# `deps` is an order-only prerequisite: it runs before the venv is made (Debian's python3
# needs python3-venv for `-m venv`), even under `make -j`, without forcing a reinstall.
$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

# make test runs everything but the tests marked `fuller` (longer duplicates of what
# another test covers: the milvus-lite link cut, SIGTERM and SIGKILL + cleanup, which the
# real-server matrix runs; and the real-server matrix's split brain and frozen havip);
# make test-fuller runs those.
test: deps venv
	$(PY) -m pytest -ra -m "not fuller" $(PYTEST_ARGS)

test-fuller: deps venv
	$(PY) -m pytest -ra -m fuller $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

# Hostile network input at full size (issue 9): 100,000 fuzzed adverts and 100,000 forged
# beacons per timer (VRRPv2 1 s, VRRPv3 0.1 s) at a running pair, plus the unit fuzz suite.
# `make test` runs the same tests with 5,000 of each.
fuzz: deps venv
	HAVIP_FUZZ_PACKETS=100000 $(PY) -m pytest -ra -s tests/unit/test_fuzz_network.py \
	    tests/integration/test_hostile_flood.py $(PYTEST_ARGS)

# 30 % packet loss on the lab bridge (nftables in the switch namespace) for 60 s, three trials
# each of VRRPv2 1 s and VRRPv3 0.1 s; figures to docs/benchmarks-loss.md. `make test` runs
# 20 s of each (tests/integration/test_loss.py).
loss: deps venv
	$(PY) bench/loss.py --seconds 60 --trials 3 --out docs/benchmarks-loss.md

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
	$(MAKE) bench-takeover
	$(MAKE) bench-milvus
	$(PY) bench/fence.py --out docs/benchmarks-fence.md
	$(PY) bench/etcd_lease.py --out docs/benchmarks-etcd.md
	$(MAKE) bench-pool
	$(PY) bench/pool_rss.py --out docs/benchmarks-pool-rss.md
	$(MAKE) bench-standalone
	$(MAKE) bench-recipe

# Milvus failover in the lab, phase by phase, each fault of issue 3: on the real Milvus
# standalone server by default (~1 min a trial: 2 trials of 5 faults take ~12 min per VRRP
# setting), MILVUS=lite for milvus-lite (seconds a trial; written beside, not over, the
# real server's reports). MILVUS_TRIALS trials per fault.
MILVUS ?= standalone
MILVUS_TRIALS ?= $(if $(filter lite,$(MILVUS)),3,2)
MILVUS_DOC := docs/benchmarks-milvus$(if $(filter lite,$(MILVUS)),-lite)
bench-milvus: deps venv
	$(PY) bench/milvus_failover.py --milvus $(MILVUS) --trials $(MILVUS_TRIALS) --out $(MILVUS_DOC).md
	$(PY) bench/milvus_failover.py --milvus $(MILVUS) --trials $(MILVUS_TRIALS) --vrrp 3:0.1 --out $(MILVUS_DOC)-v3.md

# The phase-free takeover (VRRPv3 0.1 s link cut) taken apart on the client's wire, havip
# against keepalived as it comes and against keepalived at vrrp_rt_priority 10: 20 trials
# per tool each, alternating (~7 min each on 2 cores).
bench-takeover: deps venv
	$(PY) bench/takeover.py --trials 20 --out docs/benchmarks.md
	$(PY) bench/takeover.py --trials 20 --keepalived-rt 10 --out docs/benchmarks.md

# The real Milvus standalone server: start-up and stop on shared data, and what an automatic
# failback costs, a takeover step by step with and without the stale session sweep
# (docs/milvus-standalone.md is written from these figures).
bench-standalone: deps venv
	$(PY) bench/milvus_standalone.py --out docs/milvus-standalone-startup.json
	$(PY) bench/milvus_failback.py --trials 2 --out docs/milvus-standalone-failback.json
	$(PY) bench/milvus_takeover.py --trials 2 --json docs/milvus-standalone-takeover.json
	$(PY) bench/stop_grace.py --graces 30,10,5,0 --trials 2 --idle 1 --out docs/milvus-standalone-stopgrace.json

# Issue 11 item 2's fault matrix on the real Milvus standalone server, fuller than make test's
# single round: MATRIX_ROUNDS rounds of the six handovers (container kill, Milvus hung, link cut,
# havip SIGTERM, havip SIGKILL + cleanup, havipctl failover) and the three contained faults (split
# brain, havip frozen: marked fuller, which this target does not deselect) on one lab, every
# acknowledged row read back after each (~5 min a round on 2 cores). Not part of make test
# (which runs one round of the six).
MATRIX_ROUNDS ?= 3
matrix-standalone: deps venv
	HAVIP_MATRIX_ROUNDS=$(MATRIX_ROUNDS) $(PY) -m pytest -ra -s -p no:cacheprovider \
	    tests/e2e/test_standalone_matrix.py $(PYTEST_ARGS)

# The read pool (issue 12): direct / the recipe's nginx / havip's pool side by side
# (~6 min), then the nginx variants behind the pool's per-call overhead (~15 min), appended.
bench-pool: deps venv
	$(PY) bench/read_pool.py --out docs/benchmarks-read-pool.md
	$(PY) bench/pool_overhead.py --n 3000 --rounds 30 --loopback --throughput 4 --append docs/benchmarks-read-pool.md

bench-pool-overhead: deps venv
	$(PY) bench/pool_overhead.py --loopback --throughput 4

# The headline: the recipe (keepalived + the seed's scripts) against havip on the same lab
# hosts and real Milvus standalone, each fault, alternating trials; SVG timelines beside the
# report. RECIPE_TRIALS=n per fault and system (each trial of the real server takes 1-3 minutes: 2 take ~30 min).
RECIPE_TRIALS ?= 2
bench-recipe: deps venv
	$(PY) bench/vs_recipe.py --trials $(RECIPE_TRIALS) --out docs/benchmarks-vs-recipe.md

# The control socket under 1,000 concurrent clients, slow clients and garbage for 60 s
# (the real daemon loop over fakes); figures to docs/security.md. The same soak runs in make test (functional assertions).
soak: venv
	$(PY) bench/control_soak.py --seconds 60 --out docs/security.md

# The fence on lease loss: a storage made unwritable or frozen under the master's lease.
bench-fence: deps venv
	$(PY) bench/fence.py --out docs/benchmarks-fence.md

check: venv
	$(VENV)/bin/havip check-config conf/master.yaml
	$(VENV)/bin/havip check-config conf/backup.yaml
	$(VENV)/bin/havip pool check-config conf/pool.yaml

install: deps venv
	install -d /etc/havip
	install -m 0644 conf/master.yaml conf/backup.yaml /etc/havip/
	install -m 0644 systemd/havip@.service /etc/systemd/system/havip@.service
	install -d /etc/havip/pool
	[ -e /etc/havip/pool/pool.yaml ] || install -m 0644 conf/pool.yaml /etc/havip/pool/pool.yaml
	install -m 0644 systemd/havip-pool.service /etc/systemd/system/havip-pool.service
	ln -sf $(abspath $(VENV))/bin/havip /usr/local/bin/havip
	ln -sf $(abspath $(VENV))/bin/havipctl /usr/local/bin/havipctl

# The README's steps on a pristine Debian 12 root (debootstrap, cached), with Debian's
# python3: make demo and part of make test. See tests/fresh/run.sh and docs/development.md.
fresh:
	@$(MAKE) --no-print-directory deps DEBS="debootstrap zstd git util-linux"
	tests/fresh/run.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
