# Entry points. `make search STUDY=imdb_generalize` installs on first use, then runs the study.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?=
TRIALS ?=
TIMEOUT ?=
STORAGE ?=
N ?= 2
PORT ?= 8080
HOST ?= 127.0.0.1
PYTEST_ARGS ?=
OUT ?=
BENCH_ARGS ?=
BUDGET ?= 600
SEEDS ?= 0,1,2

# Offline copies of the data sets, when this checkout sits beside them (never required).
ifneq ($(wildcard ../shared/data),)
export CAPSEARCH_DATA ?= $(abspath ../shared/data)
endif

opt = $(if $(2),$(1) $(2))
STORAGE_OPT = $(call opt,--storage,$(STORAGE))

.PHONY: install search list show validate dashboard report verdict workers test lint format bench bench-storage bench-search clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

search: install
	@if [ -z "$(STUDY)" ]; then echo "usage: make search STUDY=<name> [TRIALS=n] [TIMEOUT=s] [STORAGE=url]"; \
	  $(BIN)/capsearch list; exit 2; fi
	$(BIN)/capsearch run $(STUDY) $(call opt,--trials,$(TRIALS)) $(call opt,--timeout,$(TIMEOUT)) $(STORAGE_OPT)

list: install
	$(BIN)/capsearch list $(STORAGE_OPT)

show: install
	$(BIN)/capsearch show $(STUDY) $(STORAGE_OPT)

validate: install
	$(BIN)/capsearch validate

dashboard: install
	$(BIN)/capsearch dashboard $(STORAGE_OPT) --host $(HOST) --port $(PORT)

report: install
	@if [ -z "$(STUDY)" ]; then echo "usage: make report STUDY=<name> [STORAGE=url] [OUT=dir]"; exit 2; fi
	$(BIN)/capsearch report $(STUDY) $(STORAGE_OPT) $(call opt,--out,$(OUT))

verdict: install
	@if [ -z "$(STUDY)" ]; then echo "usage: make verdict STUDY=<name> [N=workers] [STORAGE=url]"; exit 2; fi
	$(BIN)/capsearch verdict $(STUDY) -n $(N) $(STORAGE_OPT)

workers: install
	$(BIN)/capsearch workers $(STUDY) -n $(N) $(call opt,--trials,$(TRIALS)) $(call opt,--timeout,$(TIMEOUT)) $(STORAGE_OPT)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check search tests benchmarks
	$(BIN)/ruff format --check search tests benchmarks
	$(BIN)/mypy search benchmarks
	$(BIN)/lint-imports --no-logo

format: install
	$(BIN)/ruff format search tests benchmarks
	$(BIN)/ruff check --fix search tests benchmarks

clean-venv:
	rm -rf $(VENV)

bench: install
	$(BIN)/python -m benchmarks.bench_training $(BENCH_ARGS)

bench-storage: install
	$(BIN)/python -m benchmarks.bench_storage --trials 400 --out BENCHMARKS.md
	$(BIN)/python -m benchmarks.bench_storage --proxy --workers 8 32 64 --trials 640 --out BENCHMARKS.md

bench-search: install
	$(BIN)/python -m benchmarks.bench_search --budget $(BUDGET) --seeds $(SEEDS) $(BENCH_ARGS)
