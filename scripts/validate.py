"""The validation mean of any model directory on the carve-out that `zhembed finetune --val-fraction` holds out,
so the shipped model and a candidate are compared on the same rows (the ship rule of MODEL_CARD.md).

    python scripts/validate.py zhembed/models/zhembed-small-zh runs/build/ft-b --train A.tsv,B.tsv,... \
        [--val-fraction 0.03] [--word-order-negatives 20000] [--seed 42] [--eval-data DIR] [--json OUT.json]

The held-out rows are rebuilt exactly as fine-tuning builds them (same files, word-order pairs without the
evaluation sentences of --eval-data, fraction and seed); each model is scored by the torch backend in fp32, as
`zhembed eval` scores the seed splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zhembed import Encoder
from zhembed.train.finetune import eval_sentences, training_files, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--train", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.03)
    parser.add_argument("--word-order-negatives", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-data", type=Path, default=Path("../shared/data/eval"),
                        help="as finetune's --eval-data (the build passes this folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    evals = eval_sentences(args.eval_data) if args.eval_data and args.word_order_negatives else {}
    _, rows = training_files(args.train.split(","), args.word_order_negatives, args.val_fraction, args.seed, evals)
    report = {}
    for model in args.models:
        report[model] = validation(Encoder.load(model, backend="torch"), rows)
        print(model, " ".join(f"{k} {v:.2f}" for k, v in report[model].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
