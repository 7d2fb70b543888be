#!/usr/bin/env bash
# The GPU check, as one command (about 6-8 minutes on one H100/H200; run it with a 540-s timeout):
#   bench/gpu.sh            (on the device machine: its python3 has torch with CUDA; no install needed,
#                            omni needs only torch, transformers, numpy, pillow, safetensors, tokenizers)
# 1. the loader: a full-size bf16 checkpoint (zero weights, official layout) loaded onto the GPU:
#    seconds and peak torch.cuda.max_memory_allocated;
# 2. the engine with full-size random bf16 weights: 1, 8, 16, 32 sessions with CUDA graphs (and
#    max_batch 1 at 1 and 16 for the ratio), then 1 and 16 with graphs off.
# Every figure is one JSON line, printed and kept in $OUT/gpu.jsonl (or ./gpu.jsonl).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
out="${OUT:-.}/gpu.jsonl"
py=${PYTHON:-python3}
: > "$out"
step() { echo "== $*" >&2; timeout "$1" "${@:2}" | tee -a "$out"; }
nvidia-smi -L >&2 || true
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >&2
ck=$(mktemp -d /tmp/omni-ck.XXXX)
step 150 $py bench/loader.py --full --device cuda --dtype bfloat16 --dir "$ck"
rm -rf "$ck"
step 270 $py bench/engine.py --full-random --device cuda --dtype bfloat16 --levels 1,8,16,32 \
    --alone-levels 1,16 --slot-tokens 4096
step 90 $py bench/engine.py --full-random --device cuda --dtype bfloat16 --levels 1,16 --no-alone \
    --no-cuda-graphs --slot-tokens 4096 --skip-speech
echo "== done: $out" >&2
