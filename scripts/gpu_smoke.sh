#!/usr/bin/env bash
# What a GPU machine runs first (needs >= 1 GPU; step 5 needs 2): the paths CPU tests cannot reach.
#   bash scripts/gpu_smoke.sh [OUT_DIR]       (from the repository root, with .venv made by `make test`)
# 1. the test suite (the engine's tests train on CUDA: train.device is auto);
# 2. CE and CGC (layer and TSM-R50) under fp16 and bf16 autocast against fp32, forward and backward;
# 3. one-GPU training with amp=fp16, gradient accumulation, clipping, channels_last, then --resume;
# 4. seqctx test on the run's checkpoint;
# 5. torchrun on 2 GPUs (one process per GPU: nvidia-smi is printed while it runs);
# 6. 50 lightconv_cgc updates with fairseq's --fp16, then with --amp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-gpu_smoke}
mkdir -p "$OUT"
nvidia-smi
"$PY" -m pytest -q -x

"$PY" - <<'PY'
import torch
from seqctx.modules import ChannelEquilibrium, ContextGatedConv2d
from seqctx.video.models import build_model

torch.manual_seed(0)
dev = torch.device("cuda")
def check(name, module, x, tol):
    ref = module(x.float())
    ref.square().mean().backward()
    ref_grad = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            out = module(x)
        out.float().square().mean().backward()
        err = (out.float() - ref).abs().max().item() / ref.abs().max().item()
        gerr = max((p.grad - g).abs().max().item() / (g.abs().max().item() + 1e-12)
                   for p, g in zip(module.parameters(), ref_grad))
        module.zero_grad()
        print(f"{name} {dtype}: output rel. error {err:.2e}, grad rel. error {gerr:.2e}")
        assert torch.isfinite(out).all() and err < tol and gerr < 10 * tol, name
check("CE (8x64x8x56x56)", ChannelEquilibrium(64).to(dev).train(), torch.randn(8, 64, 8, 56, 56, device=dev) * 20, 2e-2)
check("CGC 256x14x14", ContextGatedConv2d(256, 256, 3, padding=1).to(dev).train(), torch.randn(32, 256, 14, 14, device=dev), 2e-2)
check("TSM-R50+CGC", build_model("tsm_r50", 174, num_segments=8, context="cgc").to(dev).train(),
      torch.randn(2, 3, 8, 224, 224, device=dev), 5e-2)
PY

"$PY" -m seqctx data synth "$OUT/synth" --classes 4 --videos-per-class 16 --frames 16 --size 64
SETS=(--set model.name=tsm_r18 --set model.num_classes=4 --set model.width=32
      --set data.root="$OUT/synth/videos" --set data.train_annotation="$OUT/synth/train.json"
      --set data.val_annotation="$OUT/synth/validation.json" --set data.labels="$OUT/synth/labels.json"
      --set data.size=64 --set data.scale_size=72 --set data.batch_size=8 --set data.workers=4
      --set train.amp=fp16 --set train.accumulate=2 --set optim.clip_grad=20 --set train.channels_last=true)
"$PY" -m seqctx train seqctx/video/engine/demo_synthetic.yaml "${SETS[@]}" --set train.epochs=2 \
    --work-dir "$OUT/run1" --overwrite
"$PY" -m seqctx train seqctx/video/engine/demo_synthetic.yaml "${SETS[@]}" --set train.epochs=3 \
    --work-dir "$OUT/run1" --resume
"$PY" -m seqctx test --checkpoint "$OUT/run1/latest.pt" --clips 2 --crops 3

if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  (sleep 40; nvidia-smi) &
  "$PY" -m torch.distributed.run --nproc_per_node 2 -m seqctx train seqctx/video/engine/demo_synthetic.yaml \
      "${SETS[@]}" --set train.epochs=2 --work-dir "$OUT/run2" --overwrite
  "$PY" -m torch.distributed.run --nproc_per_node 2 -m seqctx test --checkpoint "$OUT/run2/latest.pt"
  wait
else
  echo "one GPU: torchrun on 2 GPUs skipped"
fi

"$PY" -m fairseq_cli.preprocess --source-lang de --target-lang en --joined-dictionary --workers 4 \
    --trainpref tests/data/text/iwslt14_bpe/train --validpref tests/data/text/iwslt14_bpe/valid \
    --testpref tests/data/text/iwslt14_bpe/test --destdir "$OUT/mt-bin" > /dev/null
for PRECISION in fp16 amp; do
  .venv/bin/fairseq-train "$OUT/mt-bin" --user-dir "$("$PY" -m seqctx mt user-dir)" --arch lightconv_cgc \
      --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 \
      --encoder-kernel-size-list "[3,7]" --decoder-kernel-size-list "[3,7]" --encoder-glu 0 --decoder-glu 0 \
      --optimizer adam --lr 0.002 --lr-scheduler inverse_sqrt --warmup-updates 10 --max-tokens 2000 \
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-update 50 --"$PRECISION" \
      --save-dir "$OUT/mt-$PRECISION" --no-save --log-format simple --log-interval 10
done
echo "gpu smoke: all steps passed"
