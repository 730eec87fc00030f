# Every target creates .venv (Python 3.11+) and installs jaxpose into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_WORKDIR ?= runs/demo
# The converter tests compare against PyTorch (CPU build; an optional extra for users).
TEST_TORCH ?= torch==2.13.0
TEST_FACENET ?= facenet-pytorch==2.6.0
# The export tests (tests/test_export.py): the `export` extra, jax2onnx without its declared dependencies (below).
TEST_ONNX ?= onnx==1.23.2 onnx-ir==1.1.0 onnxruntime==1.31.1
TEST_JAX2ONNX ?= jax2onnx==0.17.1

.PHONY: demo test clean gpu-wheels bench-gpu

$(BIN)/jaxpose: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.torch: $(BIN)/jaxpose
	$(BIN)/pip install --quiet "$(TEST_TORCH)"
	touch $@

# The MTCNN parity test's reference (tests/test_inference_mtcnn.py): facenet-pytorch's own code and weights.
# --no-deps: its pins (torch<2.3, numpy<2) would replace ours; the test stands in for torchvision's batched_nms.
$(VENV)/.facenet: $(VENV)/.torch
	$(BIN)/pip install --quiet --no-deps "$(TEST_FACENET)"
	touch $@

# --no-deps for jax2onnx: its pins would downgrade orbax-checkpoint (<0.11.37) and add Equinox, dm-pix,
# huggingface-hub, netron and orbax-export, none of which it imports to convert a Flax model.
$(VENV)/.export: $(BIN)/jaxpose
	$(BIN)/pip install --quiet $(TEST_ONNX)
	$(BIN)/pip install --quiet --no-deps "$(TEST_JAX2ONNX)"
	touch $@

# Builds synthetic_heads (cached), trains the default experiment, evaluates, prints the MAE table.
demo: $(BIN)/jaxpose
	$(BIN)/jaxpose train --config experiments/synthetic_hopenet.py --workdir $(DEMO_WORKDIR)

test: $(BIN)/jaxpose $(VENV)/.torch $(VENV)/.facenet $(VENV)/.export
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

# The GPU benchmark suite (BENCHMARKS.md). A GPU machine here has no internet but has jax, flax, optax,
# orbax and torch: `make gpu-wheels` (run where pip reaches PyPI) puts the rest into .whl/ for Python 3.12,
# and `make bench-gpu` (run on the GPU machine, from the repo root, with .whl/ carried) installs them into
# /tmp/site and prints the table; bench_gpu.json holds every row.
GPU_WHEELS := grain==0.2.18 array-record==0.8.6 tensorflow-datasets==4.9.10 ml-collections==1.1.0 \
	portpicker==1.6.0 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 tensorflow-metadata==1.21.0 \
	termcolor==3.3.0 toml==0.10.2 docstring-parser==0.18.0 googleapis-common-protos==1.76.0 tensorboardx==2.6.5

gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w .whl promise==2.3  # pure Python, published as source only

bench-gpu:
	$(PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
	PYTHONPATH=/tmp/site:. $(PYTHON) -m jaxpose.bench --suite gpu --json bench_gpu.json
