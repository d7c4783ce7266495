# synthloop: `make demo` runs a simulated campaign, `make test` runs the test suite.
# Both create or reuse .venv; the install step runs again only when pyproject.toml or
# this Makefile changed (a stamp file records the last successful install).

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.synthloop-installed
TORCH_PIN   := torch==2.13.0
EXTRAS      := dev,postgres,oracle,web,scale,pretrained
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile .ci/constraints.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first, pinned: any other version would pull gigabytes of CUDA wheels
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[$(EXTRAS)]'
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.split('+')[0] == '2.13.0' else f'torch was replaced: {v} (expected 2.13.0)')"
	@touch $(STAMP)
	@echo "environment ready in $(VENV)"

demo: $(STAMP)
	$(VENV)/bin/synthloop demo

# two pytest workers, a test file each at a time (a file's tests share module fixtures and
# run in order); PYTEST_WORKERS=0 runs everything in one process
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check controller drivers surrogates recipes sim_lab tests benchmarks

clean:
	rm -rf $(VENV) demo-campaign build *.egg-info
