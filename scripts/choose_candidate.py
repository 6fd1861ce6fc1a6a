"""Copy the candidate with the best validation mean into OUT: the carve-out of the training files chooses,
never the evaluation splits.

    python scripts/validate.py runs/build/ft-a runs/build/ft-a-avg50 --train A.tsv,... --json V.json
    python scripts/choose_candidate.py runs/build/ft-a runs/build/ft-a-avg50 --validation V.json --out runs/build/chosen

Every candidate's validation mean comes from one report of scripts/validate.py, so a fine-tune and an average
of two models (which no training run scored) are compared by the same function on the same rows. OUT is built
beside and renamed into place, with the choice in choice.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def validation(report: dict, model: Path) -> float:
    if str(model) not in report:
        raise SystemExit(f"{model}: not in the validation report; run scripts/validate.py on every candidate")
    return float(report[str(model)]["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path)
    parser.add_argument("--validation", type=Path, required=True, help="scripts/validate.py's --json report")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = json.loads(args.validation.read_text(encoding="utf-8"))
    scores = {str(c): validation(report, c) for c in args.candidates}
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
