"""Copy the candidate with the best validation mean into OUT: the carve-out of the training files chooses,
never the evaluation splits.

    python scripts/choose_candidate.py runs/build/ft-a runs/build/ft-b --out runs/build/chosen

Each candidate's validation mean is the one `zhembed finetune --val-fraction` recorded in its zhembed_run.json.
OUT is built beside and renamed into place, with the choice in choice.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def validation(model: Path) -> float:
    run = json.loads((model / "zhembed_run.json").read_text(encoding="utf-8"))
    if run.get("validation") is None:
        raise SystemExit(f"{model}: no validation mean in zhembed_run.json (train it with --val-fraction)")
    return float(run["validation"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scores = {str(c): validation(c) for c in args.candidates}
    best = max(args.candidates, key=lambda c: scores[str(c)])
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    (tmp / "choice.json").write_text(json.dumps({"chosen": str(best), "validation": scores}, indent=2) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"chose {best} (validation {scores[str(best)]:.2f} of {scores})")


if __name__ == "__main__":
    main()
