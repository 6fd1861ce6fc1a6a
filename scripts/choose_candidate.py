"""Copy the candidate with the best validation mean into OUT: the carve-out of the training files chooses,
never the evaluation splits.

    python scripts/validate.py runs/build/ft-a runs/build/ft-a-shipped25 --train A.tsv,... --json V.json
    python scripts/agreement.py runs/build/ft-a runs/build/ft-a-shipped25 zhembed/models/zhembed-small-zh ... --json G.json
    python scripts/choose_candidate.py runs/build/ft-a runs/build/ft-a-shipped25 --validation V.json --out runs/build/chosen \
        [--agreement G.json --floor zhembed/models/zhembed-small-zh]

Every candidate's validation mean comes from one report of scripts/validate.py, so a fine-tune and an average
of two models (which no training run scored) are compared by the same function on the same rows. With
--agreement and --floor, a candidate whose teacher agreement is below the floor model's (the shipped one: the
ship rule asks for no lower agreement) is passed over, unless every candidate is. OUT is built beside and
renamed into place, with the choice in choice.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ship_rule import load, pick  # scripts/ is on the path of a script run from it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", type=Path)
    parser.add_argument("--validation", type=Path, required=True, help="scripts/validate.py's --json report")
    parser.add_argument("--agreement", type=Path, help="scripts/agreement.py's --json report (with --floor)")
    parser.add_argument("--floor", type=Path, help="the model whose agreement a candidate must reach")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if (args.agreement is None) != (args.floor is None):
        raise SystemExit("--agreement and --floor go together")
    report = load(args.validation)
    scores = {str(c): float(pick(report, str(c), "validation")["mean"]) for c in args.candidates}
    eligible, agreements = list(args.candidates), {}
    if args.agreement:
        found = load(args.agreement)
        agreements = {str(c): float(pick(found, str(c), "agreement")) for c in [*args.candidates, args.floor]}
        eligible = [c for c in args.candidates if agreements[str(c)] >= agreements[str(args.floor)]] or eligible
    best = max(eligible, key=lambda c: scores[str(c)])
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    choice = {"chosen": str(best), "validation": scores, "agreement": agreements, "eligible": [str(c) for c in eligible]}
    (tmp / "choice.json").write_text(json.dumps(choice, indent=2) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"chose {best} (validation {scores[str(best)]:.2f} of {scores}; agreement {agreements or 'not checked'})")


if __name__ == "__main__":
    main()
