# salt-django. Quick start (as root, on Debian 13 or 12):
#   make deploy   configure this host and deploy the demo project
#   make test     run the whole test suite (in throwaway test hosts)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PREFIX ?= /opt/salt-django
CONF ?= /etc/salt-django
SALT_PY := $(PREFIX)/venv/bin/python
TEST_VENV := .venv
TEST_APT := python3-venv systemd-container debootstrap zstd dpkg-dev iproute2 git wrk chromium vagrant
PYTEST_ARGS ?=

PROJECT ?= demo
CLI = $(SALT_PY) scripts/salt_django.py --conf $(CONF) --project $(PROJECT)

.PHONY: help deploy plan release rollback releases backup backups restore audit test lint unit test-deps bench cluster cluster-down

help:
	@echo "make deploy                     configure this host and deploy (idempotent)"
	@echo "make plan                       show what deploy would change (test=True)"
	@echo "make release [REPO=.. REF=..]   build, gate, migrate and switch to a release, no downtime"
	@echo "make rollback [TO=<id>]         switch back to the previous release (database untouched)"
	@echo "make releases                   list built releases and the live one"
	@echo "make backup / make backups      pg_dump the database now / list backups"
	@echo "make restore FILE=.. CONFIRM=yes  restore a backup (rows written since are lost)"
	@echo "make audit                      who released, rolled back or restored what, when"
	@echo "make test                       lint + unit + integration tests"
	@echo "make lint                       ruff, salt-lint and the duplicate-code check only"
	@echo "make bench                      every benchmark, in test hosts; report in bench/reports/figures.md"
	@echo "make cluster / make cluster-down  the cluster of pillar/topology.yaml in local test hosts, deployed / removed"

deploy:
	@scripts/bootstrap.sh
	@SALT_DJANGO_TRIGGER="make deploy" $(CLI) apply

plan:
	@scripts/bootstrap.sh
	@$(CLI) apply --test

release:
	@$(CLI) release $(if $(REPO),--repo "$(REPO)") $(if $(REF),--ref "$(REF)")

rollback:
	@$(CLI) rollback $(if $(TO),--to "$(TO)")

releases backup backups audit:
	@$(CLI) $@

restore:
	@$(CLI) restore --file "$(FILE)" $(if $(filter yes,$(CONFIRM)),--confirm)

test-deps: $(TEST_VENV)/.requirements.sha256
	@missing=$$(for p in $(TEST_APT); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; apt-get update -q >/dev/null; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

$(TEST_VENV)/.requirements.sha256: requirements/test.txt requirements/salt.txt
	@dpkg-query -W -f='$${Status}' python3-venv 2>/dev/null | grep -q 'ok installed' || \
		{ apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null; }
	@[ -x $(TEST_VENV)/bin/python ] || /usr/bin/python3 -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/test.txt
	@sha256sum requirements/test.txt requirements/salt.txt > $@

lint: test-deps
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/ruff format --check .
	$(TEST_VENV)/bin/salt-lint $$(find salt -name '*.sls' -not -path '*/projects/*')
	@# Shared code belongs in _utils/: no block of 6 lines or more twice in the Salt modules.
	$(TEST_VENV)/bin/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --score=n \
		_modules/*.py _states/*.py _runners/*.py _utils/*.py

unit: test-deps
	$(TEST_VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

# Two workers (pytest-xdist), each taking whole test modules, longest first
# (tests/conftest.py, LONGEST_FIRST). PYTEST_WORKERS=0 runs one process.
PYTEST_WORKERS ?= 2
test: lint
	$(TEST_VENV)/bin/python -m pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) $(PYTEST_ARGS)

# The Vagrantfile's cluster without a hypervisor: the topology's servers as
# test hosts (systemd-nspawn) on a bridge of this machine and a salt-master,
# converged and deployed (tests/lab/local_cluster.py); prints the site's address.
cluster: test-deps
	@$(TEST_VENV)/bin/python -m tests.lab.local_cluster up

cluster-down: test-deps
	@$(TEST_VENV)/bin/python -m tests.lab.local_cluster down

# Every benchmark, in throwaway test hosts (never on this machine): issue
# 14's figures (bench/figures.py: report, PNG plots and data under
# bench/reports/), then the older single-figure ones. BENCH_ARGS is passed to
# bench/figures.py (e.g. BENCH_ARGS="--parts serving --reps 3").
BENCH_ARGS ?=
bench: test-deps $(TEST_VENV)/.bench-requirements.sha256
	$(TEST_VENV)/bin/python bench/figures.py $(BENCH_ARGS)
	$(TEST_VENV)/bin/python bench/keepalive.py
	$(TEST_VENV)/bin/python bench/deploy.py
	$(TEST_VENV)/bin/python bench/app_servers.py

$(TEST_VENV)/.bench-requirements.sha256: requirements/bench.txt requirements/test.txt requirements/salt.txt
	$(TEST_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/bench.txt
	@sha256sum requirements/bench.txt requirements/test.txt requirements/salt.txt > $@
