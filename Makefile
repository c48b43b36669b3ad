# Both targets create or refresh .venv themselves, so a fresh clone needs only `make demo` or `make test`.
# torch is pinned to the CPU wheel here (dev/CI path); the library itself only asks for torch>=2.4.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: venv demo test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev,lab]" "$(TORCH_PIN)"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m optimlab compare

# The tests of the shared run store start a PostgreSQL server of their own; its programs come
# from Debian's postgresql package, installed here when missing (see .ci/install-postgresql).
test: $(VENV)/.installed
	bash .ci/install-postgresql
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed
	$(PY) benchmarks/step_speed.py --quick
