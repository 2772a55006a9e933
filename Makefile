# crd_mm: `make demo` runs the main job, `make test` runs the tests; both install first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test files run in parallel worker processes (pytest-xdist), whole files per worker so that
# module fixtures run once: one worker per CPU, at most 4 (each test may spawn processes of its own).
PYTEST_WORKERS ?= $(shell python3 -c "import os; print(min(4, os.cpu_count() or 1))")
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: install lint test test-slow demo benchmark clean

install:
	@bash tools/install_env.sh

# Style gate (configured in pyproject.toml): lint findings and unformatted files both fail.
lint: install
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# pytest exits 5 when it collects nothing: a suite that ran no test is a failure.
test: install
	@$(PYTHON) -m pytest tests -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$status

# Tests too slow for the default suite; CI runs them after `make test`. Collecting none fails too.
test-slow: install
	@$(PYTHON) -m pytest tests -m slow $(PYTEST_PARALLEL) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-slow: pytest collected no tests" >&2; exit 1; fi; exit $$status

demo: install
	$(PYTHON) tools/demo.py

benchmark: install
	$(PYTHON) tools/benchmark/crd_bank_benchmark.py

clean:
	rm -rf $(VENV) work_dirs crd_mm/.mim
