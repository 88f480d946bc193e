#!/usr/bin/env bash
# The GPU checks of issue 11, in one script for a machine with a CUDA GPU (DEVELOPERS.md):
#   (a) the default scenario with --backend nccl at world size 1 (bit-exact resume, determinism settings reported);
#   (b) two ranks on the one GPU: whether NCCL allows it (it normally refuses two ranks on one device), and
#       what the harness reports for the default scenario at --nproc 2 with nccl on one GPU;
#   (c) the probe's overhead with on-device digests on a >= 100M-parameter model (bench/gpu_digest_overhead.py);
#   (d) the GPU-only tests (they skip on CPU-only CI);
#   (e) issue 19 part 4: DDP step time on NCCL with a >= 100M-parameter model (6 x Linear(4096, 4096), 101M
#       parameters), DDP's default vs the bucket layout pinned in parameter order (fixed_layout) vs the
#       recorded ready-order layout restored as in a resumed process (ready_order), interleaved reps, ratios
#       (bench/reduction_order.py); one rank per GPU, so it needs >= 2 GPUs (skipped, saying so, on one).
# Every step has a timeout; all output goes to $OUT (default bench/results/gpu-check), with a summary in
# $OUT/summary.txt. It keeps going after a failed step, and exits 1 if any step failed.
#
#   bash bench/gpu_check.sh             # on the GPU machine
#   bash bench/gpu_check.sh --dry-run   # anywhere: checks that the commands parse and the scripts start
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ -x .venv/bin/python ]; then PY="$PWD/.venv/bin/python"; else PY="$(command -v python3 || command -v python)"; fi
HARNESS=("$PY" -m harness.cli)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME TIMEOUT_S CMD...: run CMD with a timeout, output to $OUT/NAME.log, one summary line.
step() {
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS rc
    echo "\$ $*" > "$OUT/$name.log"
    timeout --kill-after=10 "$limit" "$@" >> "$OUT/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc in $((SECONDS - t0)) s$([ $rc -eq 124 ] && echo " (timed out after $limit s)")"
    return $rc
}

# The raw NCCL question of (b): two ranks, both on cuda:0, one all_reduce.
cat > "$OUT/nccl_two_ranks_one_gpu.py" <<'EOF'
import os, torch, torch.distributed as dist
torch.cuda.set_device(0)
dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
x = torch.full((4,), float(dist.get_rank() + 1), device="cuda")
dist.all_reduce(x)
torch.cuda.synchronize()
print(f"rank {dist.get_rank()}: all_reduce on the shared GPU gave {x.tolist()}", flush=True)
dist.destroy_process_group()
EOF

if [ $DRY -eq 1 ]; then
    say "dry run: python $PY, torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.cuda.is_available())')"
    step dry_parse 60 "$PY" - <<'EOF' || FAILED=1
from harness.cli import build_parser
p = build_parser()
for argv in (["run", "default", "--backend", "nccl", "--nproc", "1", "--kill", "7", "--no-cache", "--json"],
             ["run", "default", "--backend", "nccl", "--nproc", "2", "--kill", "7@1", "--no-cache", "--json"]):
    p.parse_args(argv)
print("harness commands parse")
EOF
    step dry_compile 60 "$PY" -m py_compile "$OUT/nccl_two_ranks_one_gpu.py" bench/gpu_digest_overhead.py || FAILED=1
    step dry_bench 300 "$PY" bench/gpu_digest_overhead.py --dry-run --json "$OUT/dry_bench.json" || FAILED=1
    # (e) on the CPU, tiny: the script starts, restores the recorded layout and prints its table
    step dry_reduction_layout 300 "$PY" bench/reduction_order.py --world 2 --width 64 --layers 2 --reps 1 \
        --steps 1 || FAILED=1
    grep -E "ranks|^ +2 |ready_order /" "$OUT/dry_reduction_layout.log" | tee -a "$SUMMARY"
    if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        # without CUDA, --backend nccl must be refused up front with exit 2 naming the fix
        step dry_nccl_refused 120 "${HARNESS[@]}" run default --backend nccl --nproc 1 --kill 7 --out "$OUT/refused"
        rc=$?
        if [ $rc -eq 2 ] && grep -q -- "--backend gloo" "$OUT/dry_nccl_refused.log"; then
            say "dry_nccl_refused: refused as expected"
        else
            say "dry_nccl_refused: UNEXPECTED (exit $rc)"; FAILED=1
        fi
    fi
    say "dry run done: $([ $FAILED -eq 0 ] && echo ok || echo FAILED)"
    exit $FAILED
fi

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "no CUDA device visible: run this on a GPU machine (or with --dry-run)"
    exit 2
fi
export PYTHONUNBUFFERED=1
# A bare GPU machine has torch but not this package: install it from the checkout (offline, editable, so
# that the built-in scenarios resolve as harness.scenarios and the pytest plugin is registered).
if ! "$PY" -c 'import harness.scenarios, harness.cli' 2>/dev/null; then
    step setup_install 300 "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . || { say "cannot install the harness"; exit 2; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.csv" 2>&1
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version(), torch.cuda.get_device_name(0))' | tee -a "$SUMMARY"
export HARNESS_CACHE_DIR="$OUT/cache"

# (a) default scenario, NCCL, world size 1, killed at step 7 and resumed
step a_nccl_ws1 240 "${HARNESS[@]}" run default --backend nccl --nproc 1 --kill 7 --no-cache --out "$OUT/a_nccl_ws1" || FAILED=1
grep -E "PASS|FAIL|ERROR|determinism:" "$OUT/a_nccl_ws1.log" | tee -a "$SUMMARY"
head -n 1 "$OUT/a_nccl_ws1/trace/rank0.jsonl" > "$OUT/a_start_row.json" 2>/dev/null

# (b) two ranks on one GPU: the raw NCCL question, then what the harness reports
step b_nccl_raw 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 "$OUT/nccl_two_ranks_one_gpu.py"
if grep -q "all_reduce on the shared GPU gave" "$OUT/b_nccl_raw.log"; then
    say "b_nccl_raw: NCCL allowed two ranks on one GPU"
else
    say "b_nccl_raw: NCCL refused two ranks on one GPU: $(grep -m1 -oiE 'duplicate GPU.{0,120}|invalid usage.{0,120}|ncclInvalidUsage.{0,120}' "$OUT/b_nccl_raw.log")"
fi
step b_harness_nproc2 240 "${HARNESS[@]}" run default --backend nccl --nproc 2 --kill 7@1 --no-cache --out "$OUT/b_harness_nproc2"
grep -E "PASS|FAIL|ERROR" "$OUT/b_harness_nproc2.log" | head -n 3 | tee -a "$SUMMARY"

# (c) probe overhead with on-device digests, >= 100M parameters
step c_digest_overhead 300 "$PY" bench/gpu_digest_overhead.py --json "$OUT/c_digest_overhead.json" || FAILED=1
tail -n 1 "$OUT/c_digest_overhead.log" | tee -a "$SUMMARY"

# (d) the GPU-only tests
step d_gpu_tests 300 "$PY" -m pytest -q -p no:randomly -p no:cacheprovider -m "slow or not slow" \
    tests/harness/launch/test_determinism.py || FAILED=1
tail -n 1 "$OUT/d_gpu_tests.log" | tee -a "$SUMMARY"

# (e) DDP on NCCL, >= 100M parameters: default vs fixed_layout vs ready_order (one rank per GPU, up to 4)
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
if [ "$NGPU" -ge 2 ]; then
    WORLDS="$(seq 2 "$((NGPU < 4 ? NGPU : 4))" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # WORLDS: one argument per world size
    step e_ddp_layout 500 "$PY" bench/reduction_order.py --backend nccl --device cuda --world $WORLDS \
        --width 4096 --layers 6 --batch 64 --reps 15 --steps 4 || FAILED=1
    grep -E "parameters|ranks|^ +[0-9] |ready_order /|layout |load average" "$OUT/e_ddp_layout.log" | tee -a "$SUMMARY"
else
    say "e_ddp_layout: skipped: $NGPU GPU(s) visible; DDP on NCCL needs one GPU per rank, >= 2"
fi

say "gpu check done: $([ $FAILED -eq 0 ] && echo ok || echo 'some step FAILED')"
exit $FAILED
