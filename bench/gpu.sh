#!/usr/bin/env bash
# The GPU check, as one command per part (each about 5-8 minutes on one H100/H200; run each with a
# 540-s timeout):
#   bench/gpu.sh [bf16|int4|all]   (default all: both parts, for a machine without a per-call limit)
#                            (on the device machine: its python3 has torch with CUDA; no install needed,
#                            omni needs only torch, transformers, numpy, pillow, safetensors, tokenizers,
#                            huggingface_hub)
# bf16: 1. the loader: a full-size bf16 checkpoint (zero weights, official layout) loaded onto the GPU:
#          seconds and peak torch.cuda.max_memory_allocated;
#       2. the engine with full-size random bf16 weights: 1, 4, 8, 16, 32 sessions with CUDA graphs (and
#          max_batch 1 at 1 and 16 for the ratio), then 1 and 16 with graphs off.
# int4: 3. the loader: the same checkpoint with --quantize int4 (peak and resident GPU memory);
#       4. the engine with int4 LLM linears: 1 and 4 sessions with CUDA graphs, speech included: tokens/s,
#          first audio and peak_mb (the target: 4 sessions within 12 GB) against bf16's levels 1 and 4;
#       5. bench/quant.py: bf16, int8 and int4 at all 28 layers: weight bytes, decode tokens/s at 1 and 16
#          sessions, unit prefill ms.
# Every figure is one JSON line, printed and kept in $OUT/gpu.jsonl (or ./gpu.jsonl; appended to).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
part=${1:-all}
out="${OUT:-.}/gpu.jsonl"
py=${PYTHON:-python3}
touch "$out"
step() { echo "== $*" >&2; timeout "$1" "${@:2}" | tee -a "$out"; }
nvidia-smi -L >&2 || true
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >&2
if [[ $part == bf16 || $part == all || $part == int4 ]]; then
    ck=$(mktemp -d /tmp/omni-ck.XXXX)
    if [[ $part != int4 ]]; then
        step 150 $py bench/loader.py --full --device cuda --dtype bfloat16 --dir "$ck"
    fi
    if [[ $part != bf16 ]]; then
        step 150 $py bench/loader.py --full --device cuda --dtype bfloat16 --quantize int4 --dir "$ck"
    fi
    rm -rf "$ck"
fi
if [[ $part == bf16 || $part == all ]]; then
    step 270 $py bench/engine.py --full-random --device cuda --dtype bfloat16 --levels 1,4,8,16,32 \
        --alone-levels 1,16 --slot-tokens 4096
    step 90 $py bench/engine.py --full-random --device cuda --dtype bfloat16 --levels 1,16 --no-alone \
        --no-cuda-graphs --slot-tokens 4096 --skip-speech
fi
if [[ $part == int4 || $part == all ]]; then
    step 150 $py bench/engine.py --full-random --device cuda --dtype bfloat16 --quantize int4 --levels 1,4 \
        --no-alone --slot-tokens 4096
    step 180 $py bench/quant.py --device cuda --source random --layers 28 --threads 0
fi
echo "== done: $out" >&2
