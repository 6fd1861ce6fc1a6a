"""The student-teacher agreement of models, as `zhembed finetune` logs it: Spearman x 100 between a model's and
the teacher's cosines of 5,000 random pairs of 1,000 held-out corpus sentences that no training pair contains.

    python scripts/agreement.py MODEL [MODEL ...] --teacher T --corpus a.txt,b.txt --train x.tsv,y.tsv \
        --cache-dir runs/distill-v2/cache [--max-sentences N] [--json OUT.json]

Every model is measured on the same held-out sentences (the last of the corpus's seeded shuffle that no row of
the --train files contains) and the teacher's cached embeddings, so the numbers compare with each other; a
fine-tune's own log excludes only its training part of those files, so its held-out set can differ slightly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zhembed import Encoder
from zhembed.train.finetune import FinetuneConfig, agreement, load_corpus, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--max-sentences", type=int, default=0,
                        help="Only the first N of the corpus's seeded shuffle, as finetune --distill-max-sentences.")
    parser.add_argument("--json", type=Path, help="write {model: agreement} here")
    args = parser.parse_args()
    cfg = FinetuneConfig(model="", train=args.train.split(","), out="", teacher=args.teacher, distill_weight=1.0,
                         distill_corpus=args.corpus, distill_max_sentences=args.max_sentences,
                         cache_dir=str(args.cache_dir))
    corpus = load_corpus(cfg, [load_dataset(Path(p)) for p in cfg.train], args.cache_dir, log=print)
    report = {}
    for model in args.models:
        report[model] = agreement(Encoder.load(model, backend="torch"), corpus)
        print(f"{model}: agreement {report[model]:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
