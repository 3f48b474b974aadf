# Isthmus developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup prereqs binaries helm image cassandra lint test test-charts test-ring-ops test-unit demo bench bench-update clean

setup: $(STAMP) prereqs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# Debian packages (Java 17, Maven, Prometheus) only when missing.
prereqs:
	bash scripts/install-prereqs.sh

# Kubernetes, etcd and kwok from the Go module proxy, cached in ~/.cache/isthmus/lab.
binaries: $(STAMP)
	$(BIN)/python -m isthmus.lab.binaries

# helm v3 from the Go module proxy, cached in ~/.cache/isthmus/tools (the chart's tests and the image use it).
helm: $(STAMP)
	$(BIN)/python -m isthmus.lab.binaries helm

# The Isthmus image (operator, cqlguard and helm) as an OCI archive in out/image/, built from Debian packages,
# helm and the project's wheel with no container daemon; cached in ~/.cache/isthmus/image. Prints the digest.
image: $(STAMP) helm
	bash scripts/install-prereqs.sh --image
	bash scripts/image/build.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

# The whole suite: unit, property, CLI, and everything against the lab's real clusters,
# real Cassandra and real Prometheus.
test: setup lint binaries helm
	bash scripts/install-prereqs.sh --image
	$(BIN)/python -m pytest -p no:cacheprovider -m "not charts and not ringops"

# Every ChartRelease test (helm built from the Go module proxy, the real etcd and Redis charts on the lab,
# the operator reconciling a release): about 5 minutes. `make test` (CI, 45 minutes at most) runs the fast ones
# and one release to three clusters, and leaves the other lab tests (marker `charts`) to this target.
test-charts: setup lint binaries helm
	$(BIN)/python -m pytest -p no:cacheprovider tests/charts

# The ring tests of database operations whose minutes CI's 45 cannot hold (marker `ringops`): a datacenter
# removed and added back with a SIGKILL mid-rebuild, a datacenter scaled up and down, a rack grown and
# restarted at once. About 15 minutes on two cores, with the ring's start.
test-ring-ops: setup lint binaries helm
	$(BIN)/python -m pytest -p no:cacheprovider -m ringops tests/ring

# The fast tests alone (no lab, no Cassandra, no Prometheus, no image build).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not lab and not cassandra and not prometheus and not image"

demo: setup binaries
	bash scripts/demo.sh

bench: setup binaries
	$(BIN)/python bench/run_all.py

# Re-run some benchmarks and replace only their sections: make bench-update BENCH="bench_guard bench_operator"
bench-update: setup binaries
	$(BIN)/python bench/run_all.py --update $(BENCH)

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
