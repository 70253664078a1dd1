# Two commands matter: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench golden screenshots browser dovecot postgres clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/pipeline check
	$(BIN)/pipeline preview
	$(BIN)/pipeline subscribers import docs/examples/subscribers.csv
	$(BIN)/pipeline schedule --next 2
	$(BIN)/pipeline run --once
	$(BIN)/pipeline status
	@echo "Previews: out/preview/<slug>/  Sent (outbox): out/outbox/mail, out/outbox/social.jsonl, out/outbox/articles/"

test: $(TEST_STAMP) browser dovecot postgres
	$(BIN)/ruff check pipeline tests bench docs
	$(BIN)/python -m pytest

# Debian's Chromium, which the browser tests drive with Playwright (installed when missing).
browser:
	@.ci/install-chromium

# Debian's Dovecot, the IMAP server the bounce-mailbox tests start with a throwaway config.
dovecot:
	@.ci/install-dovecot

# Debian's PostgreSQL server, for the tests that run the state on PostgreSQL (tests/pg_server.py
# starts a throwaway cluster; PIPELINE_TEST_DATABASE_URL names an existing server instead).
postgres:
	@.ci/install-postgres

# The preview page's screenshots in docs/ (shown in README).
screenshots: $(TEST_STAMP) browser
	$(BIN)/python docs/screenshots.py

golden: $(TEST_STAMP)
	$(BIN)/python -m pytest --update-golden tests

# Every benchmark (bench/suite.py), then docs/benchmarks.md with their tables and the machine.
bench: $(TEST_STAMP)
	@command -v smtp-sink >/dev/null 2>&1 || test -x /usr/sbin/smtp-sink || { \
	  echo "installing Debian's postfix for smtp-sink (not configured, not started)"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null || \
	  echo "warning: could not install postfix; bench/send.py falls back to aiosmtpd"; }
	$(BIN)/python bench/suite.py --n $(or $(N),100000)

clean:
	rm -rf $(VENV) out state .pytest_cache
