#!/usr/bin/env bash
# For a user WITH TensorRT and an NVIDIA GPU: export, lint, build engines, check parity against eager PyTorch,
# and benchmark, in one go. Not runnable on bt-toolkit's own machines (TensorRT cannot be installed there).
#
#   bash benchmarks/gpu_check.sh [CHECKPOINT] [OUT_DIR]        # default: base-itm-mlm, random init
#
# Needs: pip install -e ".[export,test,trt,bench]"  (tensorrt ≥ 10.14 for ONNX Attention, cuda-python).
set -euo pipefail
checkpoint="${1:-base-itm-mlm}"
out="${2:-exports/gpu-check}"
extra=()
[ "$checkpoint" = "tiny" ] || extra+=(--random-init)

python3 -c "import tensorrt, sys; print('TensorRT', tensorrt.__version__)" \
  || { echo "tensorrt is not importable: install bt-toolkit[trt] on a GPU machine" >&2; exit 2; }

echo "== export (portable ONNX Attention, fp32 + fp16) and TensorRT lint"
bt-export --checkpoint "$checkpoint" "${extra[@]}" --output "$out" --overwrite \
  --attention onnx --precision fp32,fp16 --trt-check

echo "== build fp16 engines (timing cache reused across runs)"
bt-run build-engines "$out" --precision fp16 --timing-cache "$out/../tensorrt.timing_cache"

echo "== GPU tests: engine build, parity against eager PyTorch, every pipeline on the TensorRT backend"
python3 -m pytest -m gpu tests -q

echo "== benchmark: TensorRT and ONNX Runtime against eager PyTorch (CUDA baseline included when torch sees the GPU)"
bt-bench "$out" --backend torch --backend tensorrt:fp16 --backend onnxruntime:fp32 \
  --json "$out/bench.json" --markdown "$out/bench.md"
