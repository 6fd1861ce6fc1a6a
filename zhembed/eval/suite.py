"""The Chinese STS evaluation suite: the seed card's seven splits, both protocols, tables and a chart.

Protocols (Spearman x 100):
- cosine: Spearman of cosine similarity with the label (the C-MTEB convention);
- seed: the maximum of the cosine, Manhattan, Euclidean and dot-product Spearman correlations, as
  sentence-transformers 2.x's EmbeddingSimilarityEvaluator reported it without a main similarity.
"""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZhembedError, require
from ..progress import progress
from ..runtime import Encoder
from ..runtime.pooling import truncate
from ..textio import read_lines

SEED_TASKS = ("csts_dev", "csts_test", "afqmc_dev", "lcqmc_dev", "bqcorpus_dev", "pawsx_dev", "xiaobu_dev")
SIMILARITIES = ("cosine", "manhattan", "euclidean", "dot")


NO_DATA = ("no evaluation data found at ../shared/data/eval; pass --data DIR (a folder of "
           "sentence1<TAB>sentence2<TAB>label .tsv files) or --task name=path.tsv")


def default_data_dir() -> Path | None:
    """../shared/data/eval beside the project checkout or the current directory, if there."""
    for base in (Path(__file__).resolve().parents[3], Path.cwd().parent):
        if (base / "shared" / "data" / "eval").is_dir():
            return base / "shared" / "data" / "eval"
    return None


@dataclass
class PairTask:
    name: str
    first: list[str]
    second: list[str]
    labels: np.ndarray

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> PairTask:
        """Read sentence1<TAB>sentence2<TAB>label; a bad line raises an error naming file and line."""
        path = Path(path)
        first, second, labels = [], [], []
        for number, line in enumerate(read_lines(path), 1):
            cols = line.split("\t")
            if len(cols) != 3:
                raise ZhembedError(f"{path}:{number}: expected 3 tab-separated columns, found {len(cols)}")
            try:
                label = float(cols[2])
            except ValueError:
                raise ZhembedError(f"{path}:{number}: label {cols[2]!r} is not a number") from None
            if not np.isfinite(label):
                raise ZhembedError(f"{path}:{number}: label {cols[2]!r} is not finite")
            first.append(cols[0])
            second.append(cols[1])
            labels.append(label)
        if not labels:
            raise ZhembedError(f"{path}: no sentence pairs")
        return cls(name or path.stem, first, second, np.asarray(labels))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of average-tie ranks (as scipy.stats.spearmanr)."""
    require("eval", "the evaluation suite", ("scipy",))
    from scipy.stats import rankdata

    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def pair_scores(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Similarity of each row pair, as the sentence-transformers evaluator computes them."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    return {
        "cosine": (a64 * b64).sum(1) / np.maximum(na * nb, 1e-12),
        "manhattan": -np.abs(a64 - b64).sum(1),
        "euclidean": -np.sqrt(((a64 - b64) ** 2).sum(1)),
        "dot": (a64 * b64).sum(1),
    }


def task_metrics(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Spearman x 100 for each similarity, plus `seed` (their maximum)."""
    per = {name: 100 * spearman(s, labels) for name, s in pair_scores(a, b).items()}
    return {**per, "seed": max(per.values())}


def evaluate_encoder(encoder: Encoder, tasks: list[PairTask], batch_size: int = 32, max_length: int = 256,
                     show_progress: bool = True) -> dict:
    """Encode each distinct sentence once, then score every task."""
    return evaluate_dimensions(encoder, tasks, [encoder.dim], batch_size, max_length, show_progress)[encoder.dim]


def evaluate_dimensions(encoder: Encoder, tasks: list[PairTask], dimensions: list[int], batch_size: int = 32,
                        max_length: int = 256, show_progress: bool = True) -> dict[int, dict]:
    """Scores of every task for each vector size: the leading `d` components, normalized again (a
    Matryoshka prefix, as sentence-transformers' truncate_dim). Each distinct sentence is encoded once."""
    for d in dimensions:
        if not 1 <= d <= encoder.dim:
            raise ZhembedError(f"--dimensions {d}: must be between 1 and the model's {encoder.dim}")
    sentences = list(dict.fromkeys(s for t in tasks for s in t.first + t.second))
    row = {s: i for i, s in enumerate(sentences)}
    vectors = np.zeros((len(sentences), encoder.dim), dtype=np.float32)
    done = np.zeros(len(sentences), dtype=bool)
    results: dict[int, dict] = {d: {} for d in dimensions}
    for task in progress(tasks, show_progress, desc=f"eval {encoder.path.name}", unit="task"):
        todo = [row[s] for s in dict.fromkeys(task.first + task.second) if not done[row[s]]]
        if todo:
            vectors[todo] = encoder.encode([sentences[i] for i in todo], batch_size=batch_size,
                                           max_length=max_length, show_progress=show_progress)
            done[todo] = True
        first, second = vectors[[row[s] for s in task.first]], vectors[[row[s] for s in task.second]]
        for d in dimensions:
            metrics = task_metrics(truncate(first, d), truncate(second, d), task.labels)
            results[d][task.name] = {"cosine": round(metrics["cosine"], 2), "seed": round(metrics["seed"], 2),
                                     "pairs": len(task.labels),
                                     "by_similarity": {k: round(metrics[k], 2) for k in SIMILARITIES}}
    return results


def summarize(model: str, results: dict, seconds: float) -> dict:
    avg = {p: round(float(np.mean([r[p] for r in results.values()])), 2) for p in ("cosine", "seed")}
    return {"model": model, "tasks": results, "avg": avg, "seconds": round(seconds, 1)}


def report(models: list[dict]) -> dict:
    """The JSON document: per-model results, library versions and the date."""
    versions = {"python": platform.python_version(), **installed_versions("numpy", "tokenizers", "onnxruntime",
                                                                          "transformers", "torch")}
    return {"models": models, "versions": versions, "date": datetime.date.today().isoformat()}


def installed_versions(*packages: str) -> dict[str, str]:
    """Versions of the given distributions that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def markdown_table(models: list[dict], protocol: str) -> str:
    """Tasks as columns with the average last, one row per model, and a Gap row when several."""
    tasks = list(models[0]["tasks"])
    head = f"| {protocol} | " + " | ".join(tasks) + " | avg |"
    lines = [head, "|" + "---|" * (len(tasks) + 2)]
    for m in models:
        cells = [f"{m['tasks'][t][protocol]:.2f}" for t in tasks] + [f"{m['avg'][protocol]:.2f}"]
        lines.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    if len(models) > 1:
        first, last = models[0], models[-1]
        gaps = [last["tasks"][t][protocol] - first["tasks"][t][protocol] for t in tasks]
        gaps.append(last["avg"][protocol] - first["avg"][protocol])
        lines.append("| Gap | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |")
    return "\n".join(lines)


def markdown(models: list[dict]) -> str:
    return "\n\n".join(markdown_table(models, p) for p in ("seed", "cosine")) + "\n"


def plot(models: list[dict], path: Path) -> None:
    """A grouped bar chart of cosine Spearman per task and model."""
    require("eval", "--plot", ("matplotlib",))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(models[0]["tasks"]) + ["avg"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 4))
    for i, m in enumerate(models):
        values = [m["tasks"][t]["cosine"] for t in tasks[:-1]] + [m["avg"]["cosine"]]
        ax.bar(np.arange(len(tasks)) + i * width, values, width, label=Path(m["model"]).name)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(models) - 1) / 2, tasks, rotation=20)
    ax.set_ylabel("Spearman x 100 (cosine)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_tasks(data: Path | None, names: list[str] | None, extra: dict[str, Path]) -> list[PairTask]:
    """The named tasks from `data` (default: the seven seed splits), plus extra name=path tasks."""
    data_dir = Path(data) if data else default_data_dir()
    if data_dir is None and (names or not extra):
        raise ZhembedError(NO_DATA)
    tasks = []
    for name in (names or SEED_TASKS) if data_dir else ():
        path = data_dir / f"{name}.tsv"
        if not path.exists():
            raise ZhembedError(f"task {name!r}: {path} not found")
        tasks.append(PairTask.load(path, name))
    return tasks + [PairTask.load(path, name) for name, path in extra.items()]


def write_outputs(doc: dict, json_path: Path | None, md_path: Path | None, png_path: Path | None) -> str:
    table = markdown(doc["models"])
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if md_path:
        Path(md_path).write_text(table, encoding="utf-8")
    if png_path:
        plot(doc["models"], Path(png_path))
    return table
