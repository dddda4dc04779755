# salt-django. Quick start (as root, on Debian 12 or Ubuntu 22.04/24.04):
#   make deploy   configure this host and deploy the demo project
#   make test     run the whole test suite (in throwaway test hosts)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PREFIX ?= /opt/salt-django
CONF ?= /etc/salt-django
SALT_PY := $(PREFIX)/venv/bin/python
TEST_VENV := .venv
TEST_APT := python3-venv systemd-container debootstrap zstd dpkg-dev iproute2
PYTEST_ARGS ?=

.PHONY: help deploy plan test lint unit test-deps

help:
	@echo "make deploy   configure this host and deploy (idempotent)"
	@echo "make plan     show what deploy would change (test=True)"
	@echo "make test     lint + unit + integration + cluster tests"
	@echo "make lint     ruff and salt-lint only"

deploy:
	@scripts/bootstrap.sh
	@SALT_DJANGO_PREFIX=$(PREFIX) $(SALT_PY) scripts/salt_django.py --conf $(CONF) apply

plan:
	@scripts/bootstrap.sh
	@$(SALT_PY) scripts/salt_django.py --conf $(CONF) apply --test

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

unit: test-deps
	$(TEST_VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test: lint
	$(TEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)
