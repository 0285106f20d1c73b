#!/usr/bin/env bash
# Everything that needs a GPU, in one call of the device tool (one command of at most
# 10 minutes; the whole lease is 15 minutes with the machine's start). Nothing is
# installed: the device machine has jax, flax, optax, tqdm, matplotlib and pillow, and
# no network, so the repo runs from PYTHONPATH. Steps, in order of priority, each with
# its own time cap inside BUDGET seconds; a step that runs out is recorded as timed out
# and the next one starts:
#   1. log.txt         GPU, driver, jax/flax versions, then every step's output
#   2. throughput.*    every zoo model, float32 and bfloat16, raw forward vs attack, MFU
#   2b. (log.txt)      every zoo model, k = 1, 3, 5: dense vs sparse forward, side by
#                      side at 82 problems x 400 candidates, then tiny's whole attack
#                      (20 images, paper budget) each way (the tool returns at most 8
#                      files, so its rows and table go to the log); what forward="auto"
#                      chose on the GPU and the two times it measured
#   2c. (log.txt)      EfficientNet-Lite0 at 224 (real ImageNet weights, through ONNX):
#                      dense vs sparse forward at k = 1, 3 (8 problems x 400 candidates)
#   3b. (log.txt)      EfficientNet-Lite0: the raw forward at batch 64 with its
#                      convolutions lowered and with XLA's own, and a one-pixel attack
#                      of the photos it classifies correctly at the paper's budget (DE,
#                      400 x 101), dense and sparse
#   3. tiny_10k.json   tiny, 1 pixel, untargeted, paper budget, 10,000 test images
#                      (target: < 120 s on one H100)
#   4. repro.json      32 images at 4 and 82 slots: are the results identical on a GPU?
#   4b. (log.txt)      the tail: tiny, 20 images, k = 3, DE vs Sparse-RS through attack(),
#                      whole engines with and without moving the tail (tail.py)
#   5. allcnn_1k.json  the same as 3 for allcnn on 1,000 images (target: 10,000 in < 600 s)
#   6. paper_table.*   tiny, k = 1, 3, 5, untargeted, 500 images
# Results land in $OUT (set by the device tool) or benchmarks/results/gpu-DATE/.
#
# The 10k test set is read from shared/datasets/cifar10-jpeg/test.tar inside the repo
# (the device tool carries shared/, 15 MB); copy it there first:
#   mkdir -p shared/datasets/cifar10-jpeg && cp ../shared/datasets/cifar10-jpeg/test.tar shared/datasets/cifar10-jpeg/
# Without it, steps 3-4 use the built-in 1,000-image sample. Steps 2c and 3b need the
# exported network and its photos, which `python benchmarks/imagenet.py --skip-speed
# --skip-attack` writes to runs/imagenet/ on a CPU machine with the wheels (19 MB):
# carry that folder (the device tool's carry: ["runs/imagenet"]); without it they are
# skipped. Training the paper's
# networks needs train.tar (77 MB), which does not fit the tool's 64 MiB beside the
# repo; TRAIN_MODELS="allcnn nin vgg16" trains them first where DATA holds train.tar
# (TRAIN_MINUTES each; raise BUDGET, in seconds, to match).
#
# SMOKE=1 runs every step on the CPU with toy sizes (tests/test_benchmarks.py), with
# each step's cap 4x longer (compilation dominates on a shared 2-core CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d)}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
DATA=${DATA:-}
for d in shared/datasets/cifar10-jpeg ../shared/datasets/cifar10-jpeg; do
  [ -z "$DATA" ] && [ -f "$d/test.tar" ] && DATA=$d
done
DATA=${DATA:-sample}
TRAIN_MODELS=${TRAIN_MODELS:-}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
PEAK_TFLOPS=${PEAK_TFLOPS:-67}             # H100/H200 SXM float32 (non-tensor) peak
PEAK_TFLOPS_BF16=${PEAK_TFLOPS_BF16:-989}  # H100/H200 SXM bfloat16 dense tensor peak
if [ "${SMOKE:-0}" = 1 ]; then
  BUDGET=${BUDGET:-900}; CAP_SCALE=4; ZOO=tiny; SLOTS=1; DTYPES=float32; GENS=1
  BIG=4; SMALL=2; PAPER=2; KS=1; REPRO=(--images 4 --slots 1,4)
  SEARCH=(--population 8 --generations 2)
  SPARSE=(--problems 2 --candidates 8 --reps 2 --attack-images 2 --attack-population 8
          --attack-generations 2)
  TAIL=(--images 2 --generations 2 --repeat 1 --variants whole,default)
  LITE=tests/fixtures/lite.onnx; LITE_SPARSE=(--problems 1 --candidates 8 --reps 1)
  IMAGENET=(--onnx tests/fixtures/lite.onnx --workdir "$RUNS/imagenet" --batch 2 --reps 1
            --backends "" --pixels 1 --forwards sparse --strategy sparse-rs --budget 40
            --attack-all --photos chelsea)
else
  BUDGET=${BUDGET:-540}; ZOO=tiny,resnet20,allcnn,nin,vgg16; SLOTS=82; DTYPES=float32,bfloat16
  GENS=3; BIG=10000; SMALL=1000; PAPER=500; KS=1,3,5; REPRO=(--images 32 --slots 4,82)
  SEARCH=()
  SPARSE=(--problems 82 --candidates 400 --reps 5 --attack-images 20)
  TAIL=(--images 20 --repeat 2 --variants whole,default)
  LITE=${IMAGENET_DIR:-runs/imagenet}/efficientnet_lite0.onnx
  LITE_SPARSE=(--problems 8 --candidates 400 --reps 3)
  IMAGENET=(--onnx "$LITE" --workdir "${IMAGENET_DIR:-runs/imagenet}" --batch 64 --reps 3
            --backends "" --pixels 1 --forwards dense,sparse --strategy de --budget 40400)
fi
[ "$DATA" = sample ] && BIG=$(( BIG < 1000 ? BIG : 1000 ))
t0=$SECONDS
log() { echo "[$(( SECONDS - t0 ))s] $*" | tee -a "$OUT/log.txt"; }

# step NAME CAP_SECONDS COMMAND...: run with at most CAP (and what is left of BUDGET).
step() {
  local name=$1 cap=$(( $2 * ${CAP_SCALE:-1} )); shift 2
  local left=$(( BUDGET - (SECONDS - t0) ))
  (( cap > left )) && cap=$left
  if (( cap < 10 )); then log "$name: skipped, budget spent"; return; fi
  log "$name: start (cap ${cap}s)"
  timeout -s INT -k 10 "$cap" "$@" 2>&1 | tail -n 40 >>"$OUT/log.txt"
  local rc=${PIPESTATUS[0]}
  if (( rc == 124 || rc == 137 )); then log "$name: TIMED OUT after ${cap}s"
  elif (( rc )); then log "$name: FAILED (exit $rc)"
  else log "$name: done"; fi
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__); print(jax.devices())"; } >>"$OUT/log.txt" 2>&1
log "env: $(tail -n 1 "$OUT/log.txt"); data: $DATA; budget ${BUDGET}s"
# Stop at once, not step by step, when the package cannot run here (a flax too old, ...).
if ! $PY -c "from jaxattack import models; models.load('tiny')" >>"$OUT/log.txt" 2>&1; then
  log "preflight: FAILED, jaxattack does not load here (see above)"; exit 1
fi

for m in $TRAIN_MODELS; do  # replaces the CPU-trained weights; float16 storage for vgg16
  dtype=float32; [ "$m" = vgg16 ] && dtype=float16
  step "train $m" $(( TRAIN_MINUTES * 60 + 60 )) $PY -m jaxattack.train --model "$m" \
      --data "$DATA" --time-budget "$TRAIN_MINUTES" --ckpt-dir "checkpoints/gpu-$m" \
      --weights-dtype "$dtype" --quiet
done

step throughput 150 $PY benchmarks/throughput.py --models "$ZOO" --slots "$SLOTS" \
    --devices 1 --dtypes "$DTYPES" --generations "$GENS" --repeats 2 \
    --peak-tflops "$PEAK_TFLOPS" --peak-tflops-bf16 "$PEAK_TFLOPS_BF16" \
    --out "$OUT/throughput.json"
step "sparse forward" 150 $PY benchmarks/sparse_forward.py --models "$ZOO" --pixels "$KS" \
    "${SPARSE[@]}" --out "$RUNS/sparse_forward"  # rows and table go to log.txt
if [ -f "$LITE" ]; then
  step "sparse forward, EfficientNet-Lite0" 120 $PY benchmarks/sparse_forward.py \
      --models "$LITE" --pixels 1,3 "${LITE_SPARSE[@]}" --out "$RUNS/sparse_lite"
else
  log "sparse forward, EfficientNet-Lite0: no $LITE (see the header), not run"
fi
step "tiny, $BIG images" 180 $PY benchmarks/timed_attack.py --model tiny --data "$DATA" \
    --images "$BIG" --target-seconds $(( 120 * BIG / 10000 )) "${SEARCH[@]}" \
    --out "$RUNS/tiny" --json "$OUT/tiny_10k.json"
if [ -f "$LITE" ]; then
  step imagenet 200 $PY benchmarks/imagenet.py "${IMAGENET[@]}" --out "$RUNS/imagenet_run"
else
  log "imagenet: no $LITE (see the header), not run"
fi
step "batch invariance" 60 $PY benchmarks/batch_invariance.py "${REPRO[@]}" "${SEARCH[@]}" \
    --json "$OUT/repro.json"
step tail 60 $PY benchmarks/tail.py --pixels 3 "${TAIL[@]}" --out "$RUNS/tail"
step "allcnn, $SMALL images" 90 $PY benchmarks/timed_attack.py --model allcnn \
    --data "$DATA" --images "$SMALL" --target-seconds $(( 600 * SMALL / 10000 )) \
    "${SEARCH[@]}" --out "$RUNS/allcnn" --json "$OUT/allcnn_1k.json"
step "paper table" 600 $PY benchmarks/paper_table.py --models tiny --pixels "$KS" \
    --modes untargeted --images "$PAPER" --data sample "${SEARCH[@]}" \
    --out "$RUNS/paper_table"
cp "$RUNS"/paper_table/paper_table.{md,json} "$OUT/" 2>/dev/null

log "summary"
$PY - "$OUT" "$RUNS" <<'EOF' | tee -a "$OUT/log.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
p = out / "repro.json"
if p.exists():
    r = json.loads(p.read_text())
    print(f"batch invariance: slots {r['slots']}: identical {r['identical']} "
          f"({r['problems_differing']} of {r['images']} problems differ)")
for name in ("tiny_10k", "allcnn_1k"):
    p = out / f"{name}.json"
    if p.exists():
        r = json.loads(p.read_text())
        print(f"{name}: {r['images']} images in {r['seconds']:.1f} s ({r['queries_per_s']:,.0f} "
              f"q/s), fooled {r['success_rate']:.1%}, target {r['target_seconds']} s met: {r['met']}")
    else:
        print(f"{name}: no result")
for p in (out / "throughput.md", Path(sys.argv[2]) / "sparse_forward.md",
          Path(sys.argv[2]) / "sparse_lite.md", Path(sys.argv[2]) / "imagenet_run.md",
          Path(sys.argv[2]) / "tail.md", out / "paper_table.md"):
    name = p.name
    print(p.read_text() if p.exists() else f"{name}: no result")
EOF
echo "done: $OUT"
