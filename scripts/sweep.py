"""One table of candidate models: the validation score that chose each one, then the seven seed splits.

    python scripts/sweep.py runs/finetuned-a runs/finetuned-b ... [--out docs/results/sweep]

For each candidate, the validation mean (and the student-teacher agreement, when the run measured it) comes
from the zhembed_run.json that `zhembed finetune --val-fraction` writes into the model directory; the seed
splits come from `zhembed eval --json` (torch backend, run here). Candidates are listed best validation
first, so the table shows whether the validation choice is also the best, or close to it, on the splits.
Writes OUT.json (every eval report) and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from zhembed.eval.speed import write_report


def run_info(model: Path) -> dict:
    marker = model / "zhembed_run.json"
    return json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}


def evaluate(model: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "eval.json"
        subprocess.run([sys.executable, "-m", "zhembed", "eval", str(model), "--backend", "torch", "--json", str(report)],
                       check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(report.read_text(encoding="utf-8"))["models"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results/sweep"))
    args = parser.parse_args()
    rows = []
    for model in args.models:
        info, scores = run_info(model), evaluate(model)
        rows.append({"model": str(model), "validation": info.get("validation"), "step": info.get("step"),
                     "eval": scores})
        print(f"{model}: validation {info.get('validation')}, seed avg {scores['avg']['seed']}", file=sys.stderr)
    rows.sort(key=lambda r: -(r["validation"] if r["validation"] is not None else float("-inf")))
    tasks = list(rows[0]["eval"]["tasks"])
    lines = ["| candidate | step | validation | " + " | ".join(tasks) + " | seed avg | cosine avg |",
             "|" + "---|" * (len(tasks) + 5)]
    for r in rows:
        cells = [f"{r['eval']['tasks'][t]['seed']:.2f}" for t in tasks]
        validation = f"{r['validation']:.2f}" if r["validation"] is not None else "-"
        lines.append(f"| {r['model']} | {r['step'] or '-'} | {validation} | " + " | ".join(cells)
                     + f" | {r['eval']['avg']['seed']:.2f} | {r['eval']['avg']['cosine']:.2f} |")
    table = "\n".join(lines) + "\n\nCommand: `python " + " ".join(sys.argv) + "`\n"
    write_report(args.out, rows, table)


if __name__ == "__main__":
    main()
