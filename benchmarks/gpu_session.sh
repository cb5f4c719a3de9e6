#!/usr/bin/env bash
# One device-tool call's worth of GPU benchmarking, inside a wall-clock budget.
#
#   bash benchmarks/gpu_session.sh            # on the lent GPU machine, from the repo root
#   BUDGET=480 QUICK=1 STOCK_KERNELS=.carry/stock_kernels.py bash benchmarks/gpu_session.sh
#
# Why one script: device time is scarce (about 15 minutes a task, starts included), so every
# measurement that must share a machine (our kernels, the stock-kernel anchors, the end-to-end
# model) runs in one call. Each step runs under `timeout`, capped by what is left of BUDGET, so
# one hang cannot eat the rest; a failing step is logged and the next one still runs (hence
# `set -u` without `set -e`). Everything worth keeping is copied flat into $OUT, which the
# device tool sends back (at most 8 files): session.log, stock-kernels.txt, results.tar.gz with
# every result JSON, and the first five JSONs flat.
#
# Environment: BUDGET (seconds, default 480), STEPS (space-separated step names to run, e.g.
# "quant_kernels e2e_bert_w8a8 fused_producers" for a quantization session or "prune_kernels
# nm_sparse_mma lowrank_kernels" for a pruning one; default: all; the machine checks always run), QUICK=1 (quant_kernels and lowrank_kernels without
# their config sweeps), STOCK_KERNELS (path to shared/bench/stock_kernels.py; ../shared does not travel, so
# carry a copy), PYTHON (default python3), OUT (set by the device tool; a local folder otherwise).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
BUDGET=${BUDGET:-480}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/results/tmp/gpu-session}
RESERVE=15  # seconds kept back for copying results into $OUT
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
mkdir -p "$OUT" results/benchmarks
STAMP=$(mktemp)  # results newer than this were written by this session
exec > >(tee -a "$OUT/session.log") 2>&1

SUMMARY=()

left() { echo $(( BUDGET - ($(date +%s) - START) - RESERVE )); }

# step NAME CAP_SECONDS CMD...: run CMD under timeout min(CAP, budget left); record the outcome.
step() {
    local name=$1 cap=$2 t rc t0
    shift 2
    case "$name" in nvidia-smi|versions|shim) ;; *)
        if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
            SUMMARY+=("$(printf '%-16s not selected (STEPS)' "$name")")
            return 0
        fi ;;
    esac
    t=$(left)
    (( t > cap )) && t=$cap
    if (( t < 10 )); then
        echo "=== $name: skipped, budget spent"
        SUMMARY+=("$(printf '%-16s skipped (budget)' "$name")")
        return 0
    fi
    echo "=== $name (timeout ${t}s, $(( $(date +%s) - START ))s into the session)"
    t0=$(date +%s)
    timeout -k 5 "$t" "$@"
    rc=$?
    local status="rc=$rc"
    (( rc == 124 || rc == 137 )) && status="TIMED OUT after ${t}s"
    SUMMARY+=("$(printf '%-16s %-22s %4ss' "$name" "$status" $(( $(date +%s) - t0 )))")
    return 0
}

# (a) the machine and its software, read before anything else can fail.
step nvidia-smi 20 nvidia-smi
step versions 60 "$PY" -c "import sys, torch, triton, transformers; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, \
'transformers', transformers.__version__); print('gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"

# (b) slimbench is not installed there: a `slimbench/` of symlinks to the mapped folders,
# first on PYTHONPATH, is the package setup.py would install (no pip, works offline).
SHIM=$(mktemp -d)
mkdir -p "$SHIM/slimbench"
for d in core suite methods tasks leaderboard; do
    [ -d "$ROOT/$d" ] && ln -s "$ROOT/$d" "$SHIM/slimbench/$d"
done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
step shim 60 "$PY" -c "import slimbench.methods, slimbench.methods.quant.w8a8 as w; print('slimbench from', w.__file__)"

# (c) our Triton kernels: correctness first, then timings -> results/benchmarks/quant-kernels-<gpu>.json
QK_ARGS=(--out results/benchmarks)
[ "${QUICK:-0}" = 1 ] && QK_ARGS+=(--quick)
step quant_kernels 220 "$PY" benchmarks/quant_kernels.py "${QK_ARGS[@]}"

# (d) the whole model: fp16 BERT-base vs quant.w8a8 -> results/benchmarks/e2e-bert-w8a8-<gpu>.json
step e2e_bert_w8a8 120 "$PY" benchmarks/e2e_bert_w8a8.py --out results/benchmarks

# (d2) the W8A8 fused producers (issue 23): LayerNorm writing int8 codes, one stacked Q|K|V GEMM, and
# BERT-base with both wired in -> results/benchmarks/fused-producers-<gpu>.json
step fused_producers 60 "$PY" benchmarks/fused_producers.py --reps 30 --model-after 35 --out results/benchmarks

# (e) every built-in quantization method through the harness's CUDA path (compress for CUDA,
# artifact round trip, kernel-call counts, eager + CUDA-graph latency, the same for
# torch.compile(model) as `slimbench run --compile` times it, peak memory)
#   -> results/benchmarks/cuda-methods-<gpu>.json
step cuda_methods 90 "$PY" benchmarks/cuda_methods.py --compile --out results/benchmarks

# (e2) the pruning family: 2:4 and block-sparse kernels vs fp16, the stock semi-structured anchor,
# ResNet-50 with half its channels removed and a BERT-base with 2:4 FFNs as CUDA graphs
#   -> results/benchmarks/prune-kernels-<gpu>.json
step prune_kernels 120 "$PY" benchmarks/prune_kernels.py --reps 30 --out results/benchmarks

# (e2b) the 2:4 sparse-MMA CUDA kernel (issue 24): load_inline build, every tile config checked against
# F.linear, then dense fp16 vs Triton nm24 vs mma.sp -> results/benchmarks/nm-sparse-mma-<gpu>.json
step nm_sparse_mma 90 "$PY" benchmarks/nm_sparse_mma.py --reps 30 --out results/benchmarks

# (e3) the low-rank family: the fused two-factor kernel vs dense fp16 and two cuBLAS calls, and a
# BERT-base-shaped encoder with rank-25% FFNs as CUDA graphs -> results/benchmarks/lowrank-kernels-<gpu>.json
LR_ARGS=(--reps 30 --out results/benchmarks)
[ "${QUICK:-0}" = 1 ] && LR_ARGS+=(--quick)
step lowrank_kernels 150 "$PY" benchmarks/lowrank_kernels.py "${LR_ARGS[@]}"

# (f) stock PyTorch kernels, same machine and run, as anchors (last: quant_kernels.py times fp16
# F.linear itself, so our ratios do not depend on this step)
STOCK=""
for c in "${STOCK_KERNELS:-}" .carry/stock_kernels.py shared/bench/stock_kernels.py ../shared/bench/stock_kernels.py; do
    if [ -n "$c" ] && [ -f "$c" ]; then STOCK=$c; break; fi
done
if [ -n "$STOCK" ]; then
    step stock_kernels 50 bash -c '"$0" "$1" 2>&1 | tee "$2"; exit "${PIPESTATUS[0]}"' \
        "$PY" "$STOCK" "$OUT/stock-kernels.txt"
else
    echo "=== stock_kernels: not found (copy /work/shared/bench/stock_kernels.py to .carry/ and carry it)"
    SUMMARY+=("$(printf '%-16s not found' stock_kernels)")
fi

# (g) bring results back: only files this session wrote. The tool returns at most 8 files, so
# every result JSON travels in one archive (results.tar.gz: `tar xzf` it in the repo root), and
# the first few also flat, to read at once.
mapfile -t NEW < <(find results/benchmarks -maxdepth 1 -name '*.json' -newer "$STAMP" | sort)
n=${#NEW[@]}
if (( n > 0 )); then
    tar czf "$OUT/results.tar.gz" "${NEW[@]}"
    for f in "${NEW[@]:0:5}"; do cp "$f" "$OUT/"; done
fi
rm -f "$STAMP"
rm -rf "$SHIM"

echo "=== summary ($(( $(date +%s) - START ))s of ${BUDGET}s budget; $n result file(s) in \$OUT)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
ls -l "$OUT"
exit 0
