# hat-ray: `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch; the project itself accepts torch>=2.3.
TORCH_PIN := torch==2.13.0

.PHONY: test test-all test-cluster testbed demo lint venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test,runtimes]'
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m 'not cluster'

# The cluster tests (tests/cluster/, marked `cluster`) on a real three-node Ray cluster on this
# machine: x86 head, an x86 worker without the head's disk, an emulated aarch64 Pi. Needs root;
# builds the testbed into ~/.cache/hat-ray-testbed on first use (deploy/testbed/README.md).
test-cluster: $(VENV)/.installed
	$(PY) -m pytest -q -m cluster tests/cluster

# Build (or check) the testbed only.
testbed: $(VENV)/.installed
	bash deploy/testbed/build.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hat_ray tests

# The whole pipeline on the embedded defaults (~12 min on 2 cores); re-running reuses finished
# stages. DEMO_ARGS="--data-dir ../shared/data/multi30k" runs it on Multi30k.
demo: $(VENV)/.installed
	$(VENV)/bin/hat-ray demo --out runs/demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
