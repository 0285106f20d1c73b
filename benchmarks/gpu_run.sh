#!/usr/bin/env bash
# Everything that needs a GPU, in one run: train the zoo models that lack GPU-grade
# weights, the paper table at 500 images, and the throughput table. Results land in
# benchmarks/results/gpu-DATE/ (commit them with the weights it registers).
#
#   bash benchmarks/gpu_run.sh                      # defaults sized for ~25 minutes
#   TRAIN_MINUTES=20 IMAGES=500 bash benchmarks/gpu_run.sh
#
# The CIFAR-10 JPEG tars must be reachable at $DATA (copy them into the repo's ignored
# shared/ folder when the GPU machine cannot see ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/cifar10-jpeg}
[ -d "$DATA" ] || DATA=shared/datasets/cifar10-jpeg
TRAIN_MINUTES=${TRAIN_MINUTES:-5}            # per model
TRAIN_MODELS=${TRAIN_MODELS:-allcnn nin vgg16}
IMAGES=${IMAGES:-500}
PAPER_MODELS=${PAPER_MODELS:-tiny,allcnn}
PEAK_TFLOPS=${PEAK_TFLOPS:-67}      # H100 SXM float32 (non-tensor) peak; f32 convs may use TF32
PEAK_TFLOPS_BF16=${PEAK_TFLOPS_BF16:-989}  # H100 SXM bfloat16 dense tensor peak
OUT=benchmarks/results/gpu-$(date +%Y%m%d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

python -m pip install -q -e . "jax[cuda12]" 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import jax; print(jax.devices())" | tee -a "$OUT/gpu.txt"

for m in $TRAIN_MODELS; do  # replaces the CPU-trained weights; float16 storage for vgg16
  dtype=float32; [ "$m" = vgg16 ] && dtype=float16
  python -m jaxattack.train --model "$m" --data "$DATA" --time-budget "$TRAIN_MINUTES" \
      --ckpt-dir "checkpoints/gpu-$m" --weights-dtype "$dtype" --quiet 2>&1 | tee "$OUT/train-$m.log"
done

python benchmarks/throughput.py --models tiny,resnet20,allcnn,nin,vgg16 --slots 16,64 \
    --devices 1 --dtypes float32,bfloat16 --peak-tflops "$PEAK_TFLOPS" \
    --peak-tflops-bf16 "$PEAK_TFLOPS_BF16" --out "$OUT/throughput.json" 2>&1 | tail -30
python benchmarks/paper_table.py --models "$PAPER_MODELS" --images "$IMAGES" \
    --data "$DATA" --out "$OUT/paper_table" 2>&1 | tail -30
cp "$OUT/paper_table/paper_table.md" "$OUT/paper_table.md"
echo "done: $OUT"
