"""Whether a candidate replaces the shipped model: the ship rule of MODEL_CARD.md, read from the reports that the
build's `evaluate` stage writes, and the accuracy issue's targets beside it.

    python scripts/ship_rule.py runs/build/chosen zhembed/models/zhembed-small-zh \
        --validation docs/results/validation-chosen.json --seed docs/results/eval-chosen-dims.json \
        --int8 docs/results/eval-chosen-int8.json --agreement docs/results/agreement-chosen.json \
        --out docs/results/ship-verdict

The rule: the validation mean (scripts/validate.py, the same carve-out for both) and the seven-split seed
average (torch fp32, 384-d) each at least 0.5 above the shipped model's, the teacher agreement
(scripts/agreement.py) no lower, and no seed split more than 3.0 below. Writes OUT.json and OUT.md and prints the
table; it exits 0 whatever the verdict (the verdict is in the report), 1 when a report lacks a model or a
split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zhembed.eval.speed import write_report

MARGIN, SPLIT_DROP, INT8_GAP = 0.5, 3.0, 0.3
TARGETS = {"seed average": 55.0, "pawsx_dev": 10.0, "64-d share %": 99.0, "32-d share %": 96.0}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def pick(report: dict, model: str, what: str) -> dict | float:
    if model not in report:
        sys.exit(f"{model}: not in the {what} report (it has {', '.join(report) or 'nothing'})")
    return report[model]


def measures(model: str, validation: dict, seed: dict, agreement: dict) -> dict:
    """One model's numbers; `seed` is keyed by `zhembed eval --dimensions`'s row labels, 'MODEL @D'."""
    full = pick(seed, f"{model} @384", "seed")
    share = {d: 100 * pick(seed, f"{model} @{d}", "seed")["avg"]["cosine"] / full["avg"]["cosine"] for d in (64, 32)}
    return {"validation": pick(validation, model, "validation")["mean"],
            "seed average": full["avg"]["seed"], "agreement": pick(agreement, model, "agreement"),
            "splits": {task: s["seed"] for task, s in full["tasks"].items()},
            "64-d share %": share[64], "32-d share %": share[32]}


def verdict(new: dict, old: dict, int8_average: float) -> dict:
    drops = {t: new["splits"][t] - old["splits"][t] for t in old["splits"]}
    rule = {f"validation +{MARGIN}": new["validation"] - old["validation"] >= MARGIN,
            f"seed average +{MARGIN}": new["seed average"] - old["seed average"] >= MARGIN,
            "agreement no lower": new["agreement"] >= old["agreement"],
            f"no split {SPLIT_DROP} below": min(drops.values()) >= -SPLIT_DROP,
            f"int8 within {INT8_GAP}": new["seed average"] - int8_average <= INT8_GAP}
    value = {**new["splits"], **new}
    targets = {name: None if name not in value else value[name] >= goal for name, goal in TARGETS.items()}
    return {"ship": all(rule.values()), "rule": rule, "targets met": targets, "split changes": drops}


def table(model: str, shipped: str, new: dict, old: dict, result: dict, int8_average: float) -> str:
    rows = [("validation mean", new["validation"], old["validation"]),
            ("seed average (fp32)", new["seed average"], old["seed average"]),
            ("seed average (int8 ONNX)", int8_average, None),
            ("teacher agreement", new["agreement"], old["agreement"]),
            *((task, new["splits"][task], old["splits"][task]) for task in old["splits"]),
            ("64-d share of 384-d %", new["64-d share %"], old["64-d share %"]),
            ("32-d share of 384-d %", new["32-d share %"], old["32-d share %"])]
    lines = [f"| | {model} | {shipped} (shipped) |", "|---|---|---|"]
    lines += [f"| {name} | {a:.2f} | {'-' if b is None else f'{b:.2f}'} |" for name, a, b in rows]
    checks = [f"- {name}: {'yes' if ok else 'NO'}" for name, ok in result["rule"].items()]
    said = {True: "met", False: "not met", None: "not scored"}
    goals = [f"- {name} >= {TARGETS[name]}: {said[ok]}" for name, ok in result["targets met"].items()]
    head = f"**Verdict: {'ship' if result['ship'] else 'do not ship'}** {model}"
    return "\n".join([head, "", *lines, "", "The ship rule:", *checks, "", "The accuracy targets:", *goals,
                      "", "Command: `python " + " ".join(sys.argv) + "`", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate")
    parser.add_argument("shipped")
    for name, what in (("validation", "scripts/validate.py --json, both models"),
                       ("seed", "zhembed eval --dimensions 384,64,32 --json, both models (torch)"),
                       ("int8", "zhembed eval --backend onnx --json of the candidate"),
                       ("agreement", "scripts/agreement.py --json, both models")):
        parser.add_argument(f"--{name}", type=Path, required=True, help=what)
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    reports = load(args.validation), {r["model"]: r for r in load(args.seed)["models"]}, load(args.agreement)
    new, old = measures(args.candidate, *reports), measures(args.shipped, *reports)
    if missing := sorted(set(old["splits"]) ^ set(new["splits"])):
        sys.exit(f"the seed report scores {', '.join(missing)} for only one of the two models; evaluate both at once")
    int8_average = load(args.int8)["models"][0]["avg"]["seed"]
    result = verdict(new, old, int8_average)
    report = {"candidate": args.candidate, "shipped": args.shipped, **result, "int8 seed average": int8_average,
              "measures": {args.candidate: new, args.shipped: old}}
    write_report(args.out, report, table(args.candidate, args.shipped, new, old, result, int8_average))


if __name__ == "__main__":
    main()
