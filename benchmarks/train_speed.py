"""Training speed, before and after: fine-tuning pairs/s and distillation sentences/s, at equal steps.

    python benchmarks/train_speed.py --model zhembed/models/zhembed-small-zh [--steps 120] [--rounds 2]

"before" is the old training step (fp32, each step's texts in one padded forward pass); "after" is the
default (bf16 autocast where the CPU has AVX512-BF16 or AMX, fine-tuning texts in length-sorted groups of
32). Each run starts from the same model and seed and trains the same number of steps; the variants take
turns for `--rounds` rounds after one warm-up run each. Fine-tuning uses the recipe's data (all files of
../shared/data/train, 1% of each held out, Matryoshka, the distillation term on corpus sentences); the
validation mean after the last step shows whether the faster step learns the same. Distillation trains
the same student on the first `--distill-sentences` corpus sentences; its dev MSE plays that role.
Writes benchmarks/results/train_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from zhembed.eval.speed import cpu_name, write_report
from zhembed.train.distill import DistillConfig, distill
from zhembed.train.finetune import FinetuneConfig, finetune

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VARIANTS = {"before": {"precision": "fp32", "group_size": 0}, "after": {"precision": "auto", "group_size": 32}}


class Log:
    """Keeps the messages of one training run: the rate of its last step line and its last eval line."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)

    def last(self, pattern: str) -> re.Match:
        return next(m for m in map(re.compile(pattern).search, reversed(self.lines)) if m)


def finetune_run(args, work: Path, variant: str, corpus: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    train = sorted(str(p) for p in (args.data / "train").glob("*.tsv"))
    cfg = FinetuneConfig(model=args.model, train=train, out=str(work / "out"), work_dir=str(work), eval_data=str(args.data / "eval"),
                         val_fraction=0.01, matryoshka="384,256,128,64,32", teacher=args.teacher, distill_weight=300,
                         distill_corpus=str(corpus), cache_dir=str(args.work / "cache"), word_order_negatives=2000,
                         epochs=1.0, checkpoint_every=10 ** 9, eval_every=10 ** 9, threads=2, **VARIANTS[variant])
    log = Log()
    steps_per_epoch = _finetune_steps(cfg)
    cfg.epochs = (args.steps + 0.5) / steps_per_epoch
    cfg.eval_data = ""  # the guard ran in _finetune_steps; the run reports validation only
    finetune(cfg, log=log)
    rate = float(log.last(r"\(([\d.]+) steps/s").group(1))
    return {"pairs_per_s": rate * cfg.batch_size, "validation": float(log.last(r"validation .* mean ([-\d.]+)").group(1))}


def _finetune_steps(cfg: FinetuneConfig) -> int:
    """Steps in one epoch of this configuration (as finetune counts them), after its contamination guard."""
    from zhembed.train.finetune import (Sampler, contamination, load_dataset, split_validation,
                                        word_order_dataset)

    datasets = [load_dataset(Path(p)) for p in cfg.train]
    datasets.append(word_order_dataset(datasets, cfg.word_order_negatives, cfg.seed))
    datasets = [split_validation(ds, cfg.val_fraction, cfg.seed)[0] for ds in datasets]
    assert not contamination(datasets, Path(cfg.eval_data))
    return Sampler(datasets, cfg.batch_size, cfg.seed).steps_per_epoch


def distill_run(args, work: Path, variant: str, corpus: Path) -> dict:
    shutil.rmtree(work / "out", ignore_errors=True)
    (work / "checkpoint.pt").unlink(missing_ok=True)
    cfg = DistillConfig(teacher=args.teacher, out=str(work / "out"), corpus=str(corpus), work_dir=str(work),
                        dev_sentences=500, checkpoint_every=10 ** 9, eval_every=10 ** 9, threads=2,
                        precision=VARIANTS[variant]["precision"])
    log = Log()
    start = time.perf_counter()
    distill(cfg, log=log)
    rate = float(log.last(r"\((\d+) sentences/s").group(1))
    return {"sentences_per_s": rate, "dev_mse": float(log.last(r"dev MSE ([\d.]+)").group(1)),
            "seconds": time.perf_counter() - start}


def corpus_file(work: Path, n: int) -> Path:
    path = work / f"corpus-{n}.txt"
    with open(DATA / "corpus" / "sentences.txt", encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return path


def main() -> None:
    from zhembed.make.import_e5 import teacher_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="The student to fine-tune (e.g. the shipped model).")
    parser.add_argument("--teacher", default=None, help="Teacher directory (default: the imported e5).")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--distill-sentences", type=int, default=8500, help="Corpus sentences for distillation (500 are dev).")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "zhembed-train-speed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.teacher = str(args.teacher or teacher_dir())
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = {"finetune": corpus_file(args.work, 5000), "distill": corpus_file(args.work, args.distill_sentences)}
    runs = {"finetune": finetune_run, "distill": distill_run}
    results = {kind: {v: [] for v in VARIANTS} for kind in runs}
    for rnd in range(args.rounds + 1):  # round 0 is the warm-up (caches, first-call costs), not reported
        for kind, run in runs.items():
            for variant in VARIANTS if rnd % 2 == 0 else reversed(VARIANTS):
                result = run(args, args.work / f"{kind}-{variant}", variant, corpus[kind])
                print(f"round {rnd} {kind} {variant}: {result}", flush=True)
                if rnd:
                    results[kind][variant].append(result)
    report = summarize(results, args)
    write_report(args.out / "train_speed", report, markdown(report))


def summarize(results: dict, args) -> dict:
    def median(kind: str, variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind][variant])
    ft, ds = "finetune", "distill"
    return {
        "cpu": cpu_name(), "steps": args.steps, "rounds": args.rounds, "model": args.model, "variants": VARIANTS,
        "finetune_pairs_per_s": {v: median(ft, v, "pairs_per_s") for v in VARIANTS},
        "finetune_ratio": median(ft, "after", "pairs_per_s") / median(ft, "before", "pairs_per_s"),
        "finetune_validation": {v: [r["validation"] for r in results[ft][v]] for v in VARIANTS},
        "distill_sentences_per_s": {v: median(ds, v, "sentences_per_s") for v in VARIANTS},
        "distill_ratio": median(ds, "after", "sentences_per_s") / median(ds, "before", "sentences_per_s"),
        "distill_dev_mse": {v: [r["dev_mse"] for r in results[ds][v]] for v in VARIANTS},
        "runs": results,
    }


def markdown(r: dict) -> str:
    v = r["finetune_validation"]
    m = r["distill_dev_mse"]
    return (f"# Training speed, before and after\n\nCPU: {r['cpu']}; {r['steps']} fine-tuning steps per run, medians "
            f"of {r['rounds']} interleaved rounds after a warm-up round.\n\n"
            "| | before (fp32, one forward) | after (bf16 autocast, length groups) | ratio |\n|---|---|---|---|\n"
            f"| fine-tuning pairs/s | {r['finetune_pairs_per_s']['before']:.1f} | {r['finetune_pairs_per_s']['after']:.1f} "
            f"| {r['finetune_ratio']:.2f}x |\n"
            f"| fine-tuning validation mean | {', '.join(f'{x:.2f}' for x in v['before'])} | {', '.join(f'{x:.2f}' for x in v['after'])} | |\n"
            f"| distillation sentences/s | {r['distill_sentences_per_s']['before']:.0f} | {r['distill_sentences_per_s']['after']:.0f} "
            f"| {r['distill_ratio']:.2f}x |\n"
            f"| distillation dev MSE | {', '.join(f'{x:.6f}' for x in m['before'])} | {', '.join(f'{x:.6f}' for x in m['after'])} | |\n")


if __name__ == "__main__":
    main()
