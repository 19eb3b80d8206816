# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Needs python3 (3.11/3.12), Java 17+ and Maven on PATH; everything else is installed here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TRITON := .venv-triton
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test unit lint clean prometheus

# The app venv (uv is much faster than pip for torch's multi-GB wheels and caches them across clones).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python --config-settings editable_mode=compat -e '.[dev]'
	touch $@

# Only the tritonserver binary, its libraries and backends are used from this wheel; it pins
# numpy<2, so it goes into a folder of its own without its Python dependencies. The python
# backend's stub garbles numpy 2 arrays, so the stub gets numpy 1.x first on its path.
$(TRITON)/.installed: $(VENV)/.installed
	$(BIN)/uv pip install --no-deps --target $(TRITON) nvidia-pytriton==0.7.0
	$(BIN)/uv pip install --python $(BIN)/python --target $(TRITON)/stub-site "numpy<2"
	touch $@

# Apache Kafka's jars, fetched with Maven into the git-ignored cache.
.cache/kafka/libs/.complete: deploy/kafka/pom.xml $(VENV)/.installed
	$(BIN)/python -c "from streams.local.kafka import ensure_jars; from streams.settings import Settings; ensure_jars(Settings().cache_dir)"

# Prometheus and promtool (Debian's package) for the observability tests. A service the package may
# start on :9090 is stopped: the tests run their own server on a free port.
prometheus:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	      && { systemctl disable --now prometheus 2>/dev/null || service prometheus stop 2>/dev/null || true; }; \
	  else echo "promtool not found: install Debian's prometheus package (sudo apt-get install prometheus)" >&2; exit 1; fi; }

setup: $(VENV)/.installed $(TRITON)/.installed .cache/kafka/libs/.complete prometheus

demo: setup
	$(BIN)/streamrec demo $(ARGS)

lint: setup
	$(BIN)/ruff check streams encoders tests
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit streams encoders

clean:
	-$(BIN)/streamrec kafka down
	-$(BIN)/streamrec triton down
	rm -rf .cache $(VENV) $(TRITON)
