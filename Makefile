# charrnn: `make demo` trains on a built-in corpus and samples; `make test` runs the tests.
# Both create the virtualenv on first use. GPU users: make install TORCH_SPEC=torch (see docs/install.md).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CHARRNN := $(VENV)/bin/charrnn
# The CPU build of torch; change it for a GPU (e.g. TORCH_SPEC=torch, or add TORCH_INDEX=...).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# The optional extras, all installed so that every test runs: the tools (dev), plots, the
# faster one-stream sampler (fast), ONNX export and its check (onnx, ~37 MB of wheels), the server
# (serve: starlette, uvicorn). Fewer,
# e.g. EXTRAS=dev: the tests that need the others skip.
EXTRAS ?= dev,plot,fast,onnx,serve
DEMO_TIME ?= 60s
STDLIB := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")

.PHONY: install demo test test-slow bench lint docs clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# Train the default preset for $(DEMO_TIME) on the Python standard library's own source
# (every Python install has it: nothing is downloaded), then sample from the best checkpoint.
demo: install
	rm -rf runs/demo
	$(CHARRNN) train "$(STDLIB)/*.py" --max-time $(DEMO_TIME) --out runs/demo
	$(CHARRNN) sample --checkpoint runs/demo --prime "def " --length 600 --seed 0

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m "slow or not slow"

bench: install
	$(PY) -m benchmarks.run

# docs/cli.md is written from the commands' declarations; a test fails when it is out of date.
docs: install
	$(PY) -m charrnn.cli_reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

lint: install
	$(VENV)/bin/ruff check charrnn tests benchmarks
	$(VENV)/bin/ruff format --check charrnn tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
