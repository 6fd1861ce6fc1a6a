"""Fine-tuning on labelled Chinese pairs: CoSENT for graded and binary labels, in-batch-negative ranking
(with the contradiction as a hard negative) for NLI triples, datasets sampled by size.

Beside the supervised losses, optionally:
- a distillation MSE towards the teacher's (cached) embeddings of unlabeled corpus sentences, which keeps
  the student close to the teacher outside the training tasks;
- a Matryoshka objective: every loss applied to each vector prefix (384, 256, ... dimensions);
- synthetic word-order negatives: a sentence with two spans swapped must score below its paraphrase;
- a validation set carved from the training files (a seeded fraction of each), which picks the checkpoint,
  and the student-teacher agreement on held-out corpus sentences, reported beside it.

Read top to bottom: config, data (with the contamination guard), losses, validation, the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError
from ..eval.suite import PairTask
from ..modeldir import write_json
from ..progress import Log
from ..runtime import Encoder
from ..textio import read_corpus, read_lines
from .common import RUN_CONFIG, pooled, save_model, start_run, trainable_module
from .run import Run
from .teacher_cache import TEACHER_MAX_LENGTH, teacher_embeddings

if TYPE_CHECKING:
    import torch

AGREEMENT_SENTENCES = 1000


@dataclass
class FinetuneConfig:
    model: str
    train: list[str]
    out: str
    eval_data: str = ""           # folder of evaluation TSVs: the contamination guard
    allow_overlap: bool = False
    teacher: str = ""             # with distill_weight > 0: MSE towards the teacher's embeddings
    distill_weight: float = 0.0
    distill_corpus: str = ""      # unlabeled sentences (comma-separated files) for that MSE
    distill_batch: int = 32
    distill_max_sentences: int = 0  # the first N of the corpus's seeded shuffle (the order distillation caches in)
    cache_dir: str = ""           # the teacher-embedding cache (default: WORK_DIR/cache; a distill run's is reused)
    val_fraction: float = 0.0     # a seeded share of each training file held out to pick the checkpoint
    matryoshka: str = ""          # e.g. "384,256,128,64,32": the losses on each prefix of the vectors
    word_order_negatives: int = 0  # synthetic pairs: a sentence and itself with two spans swapped (label 0)
    hard_negatives: str = ""      # TSV (anchor, positive, mined negative) from `zhembed mine-negatives`, for ranking
    threads: int = 0
    precision: str = "auto"       # the forward pass: "bf16" autocast, "fp32", or "auto" (bf16 where the CPU has it)
    group_size: int = 32          # texts per forward pass, length-sorted so each pads little (0: a step's texts at once)
    size_exponent: float = 1.0    # a step's file is drawn with probability ∝ rows**this (1: by size; 0: evenly)
    data_offset: int = 0          # start the batch stream at this step: a run from an earlier run's weights sees new batches
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-5
    warmup: float = 0.1
    max_length: int = 64
    scale: float = 20.0           # CoSENT and ranking-loss temperature (1 / 0.05)
    seed: int = 42
    work_dir: str = "runs/finetune"
    checkpoint_every: int = 200
    eval_every: int = 500
    log_every: int = 20


@dataclass
class Dataset:
    """One training file: `pairs` (s1, s2, label) for CoSENT, or `triples` (anchor, positive, negative)."""

    name: str
    kind: str                      # "cosent" or "triples"
    rows: list[tuple] = field(default_factory=list)
    labels: np.ndarray | None = None


def is_nli(path: Path, labels: np.ndarray) -> bool:
    return "nli" in path.stem.lower() and set(np.unique(labels)) <= {0.0, 1.0, 2.0}


def nli_triples(task: PairTask) -> list[tuple[str, str, str]]:
    """(premise, entailment, contradiction) for every premise that has both."""
    by_premise: dict[str, dict[int, str]] = {}
    for s1, s2, label in zip(task.first, task.second, task.labels):
        by_premise.setdefault(s1, {}).setdefault(int(label), s2)
    return [(p, h[2], h[0]) for p, h in by_premise.items() if 2 in h and 0 in h]


def load_dataset(path: Path) -> Dataset:
    task = PairTask.load(path)
    if is_nli(path, task.labels):
        return Dataset(task.name, "triples", nli_triples(task))
    return Dataset(task.name, "cosent", list(zip(task.first, task.second)), task.labels)


def read_triples(path: Path) -> Dataset:
    """The (anchor, positive, negative) rows of a mined hard-negative file, for the ranking loss."""
    rows = []
    for number, line in enumerate(read_lines(Path(path)), 1):
        cols = tuple(line.split("\t"))
        if len(cols) != 3:
            raise ZhembedError(f"{path}:{number}: expected anchor<TAB>positive<TAB>negative, found {len(cols)} columns")
        rows.append(cols)
    if not rows:
        raise ZhembedError(f"{path}: no triples")
    return Dataset("hard_negatives", "triples", rows)


def split_validation(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(training part, validation part): a seeded `fraction` of the rows, at least one, held out."""
    order = np.random.default_rng([seed, len(ds.rows)]).permutation(len(ds.rows))
    held = order[:max(1, int(round(fraction * len(ds.rows))))]
    keep = np.setdiff1d(order, held)

    def part(rows: np.ndarray) -> Dataset:
        return Dataset(ds.name, ds.kind, [ds.rows[i] for i in rows], None if ds.labels is None else ds.labels[rows])
    return part(keep), part(held)


def swap_spans(text: str, rng: np.random.Generator) -> str | None:
    """`text` with two non-overlapping spans of 1-3 characters exchanged (roles swapped, as in PAWS); None if
    a few draws find no two different spans (a text too short, or of one repeated character)."""
    for _ in range(8):
        length = int(rng.integers(1, 4))
        if len(text) < 2 * length + 1:
            continue
        i = int(rng.integers(0, len(text) - 2 * length + 1))
        j = int(rng.integers(i + length, len(text) - length + 1))
        a, b = text[i:i + length], text[j:j + length]
        if a != b:
            return text[:i] + b + text[i + length:j] + a + text[j + length:]
    return None


def word_order_dataset(datasets: list[Dataset], count: int, seed: int,
                       exclude: frozenset[str] = frozenset()) -> Dataset:
    """Pairs (a, b, 1) of paraphrases from the binary CoSENT files, each beside (a, a with two spans swapped,
    0): the model must rank a paraphrase above a look-alike that means something else. A look-alike that is
    a sentence of `exclude` (the evaluation splits) is not made."""
    rng = np.random.default_rng(seed)
    positives = [row for ds in datasets if ds.kind == "cosent" and set(np.unique(ds.labels)) <= {0.0, 1.0}
                 for row, label in zip(ds.rows, ds.labels) if label == 1]
    rows, labels = [], []
    for i in rng.permutation(len(positives)):
        a, b = positives[i]
        swapped = swap_spans(a, rng)
        if swapped is not None and swapped not in exclude:
            rows += [(a, b), (a, swapped)]
            labels += [1.0, 0.0]
        if len(rows) >= 2 * count:
            break
    return Dataset("word_order", "cosent", rows, np.asarray(labels))


def eval_sentences(eval_dir: Path) -> dict[str, set[str]]:
    """Sentences of every evaluation split in the folder, by file name."""
    files = sorted(Path(eval_dir).glob("*.tsv"))
    if not files:
        raise ZhembedError(f"--eval-data {eval_dir}: no .tsv evaluation splits found")
    tasks = {f.name: PairTask.load(f) for f in files}
    return {name: set(t.first) | set(t.second) for name, t in tasks.items()}


def training_files(train: list[str], word_order: int, val_fraction: float, seed: int,
                   evals: dict[str, set[str]]) -> tuple[list[Dataset], list[Dataset]]:
    """The training files (with `word_order` look-alike negatives, none of them an evaluation sentence of
    `evals`), each split into the part fine-tuning trains on and its seeded held-out share (empty without
    `val_fraction`). scripts/validate.py rebuilds the held-out rows with this too."""
    datasets = [load_dataset(Path(p)) for p in train]
    if word_order:
        datasets.append(word_order_dataset(datasets, word_order, seed, frozenset().union(*evals.values())))
    if not val_fraction:
        return datasets, []
    trained, held_out = zip(*(split_validation(ds, val_fraction, seed) for ds in datasets))
    return list(trained), list(held_out)


def contamination(datasets: list[Dataset], evals: dict[str, set[str]]) -> list[str]:
    """One line per training file with rows that share a sentence with an evaluation split (`eval_sentences`)."""
    every = set().union(*evals.values())
    problems = []
    for ds in datasets:
        hits = [row for row in ds.rows if any(s in every for s in row)]
        if hits:
            splits = sorted(name for name, sents in evals.items() if any(s in sents for row in hits for s in row))
            problems.append(f"{ds.name}: {len(hits)} of {len(ds.rows)} rows share a sentence with {', '.join(splits)}")
    return problems


def cosent_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT: every pair ranked above another by label must also be ranked above it by cosine."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a, b) * scale
    diff = cos[None, :] - cos[:, None]            # diff[i, j] = cos_j - cos_i
    mask = labels[:, None] > labels[None, :]      # i should score above j
    diff = diff[mask]
    return torch.logsumexp(torch.cat([torch.zeros(1, dtype=diff.dtype), diff]), dim=0)


def ranking_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
    """In-batch negatives: each anchor must pick its own positive among all positives and hard negatives."""
    import torch

    candidates = torch.nn.functional.normalize(torch.cat([positive, negative]), dim=-1)
    logits = torch.nn.functional.normalize(anchor, dim=-1) @ candidates.T * scale
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(anchor)))


def matryoshka_loss(loss_fn: Callable[..., torch.Tensor], embeddings: Sequence[torch.Tensor], dims: list[int]) -> torch.Tensor:
    """The mean of `loss_fn` over each prefix of the embeddings (all of them when `dims` is empty)."""
    if not dims:
        return loss_fn(*embeddings)
    return sum(loss_fn(*(e[:, :d] for e in embeddings)) for d in dims) / len(dims)


class Sampler:
    """Per step: a dataset drawn with probability ∝ size**size_exponent, then the next batch of its own shuffle.
    An epoch is as many steps as the rows of all datasets fill, whatever the exponent."""

    def __init__(self, datasets: list[Dataset], batch_size: int, seed: int, size_exponent: float = 1.0):
        self.datasets, self.batch_size, self.seed = datasets, batch_size, seed
        sizes = np.array([len(d.rows) for d in datasets], dtype=float)
        self.steps_per_epoch = int(sizes.sum() // batch_size)
        weights = sizes ** size_exponent
        self.choice = np.random.default_rng(seed).choice(len(datasets), size=self.steps_per_epoch * 100,
                                                         p=weights / weights.sum())

    def batch(self, step: int) -> tuple[Dataset, np.ndarray]:
        """Deterministic in `step`, so a resumed run sees the same batches."""
        which = int(self.choice[step % len(self.choice)])
        ds = self.datasets[which]
        seen = int((self.choice[:step % len(self.choice)] == which).sum())
        per_epoch = max(1, len(ds.rows) // self.batch_size)
        epoch, within = divmod(seen, per_epoch)
        order = np.random.default_rng([self.seed, which, epoch]).permutation(len(ds.rows))
        return ds, order[within * self.batch_size:(within + 1) * self.batch_size]


def _embed(model: torch.nn.Module, encoder: Encoder, texts: list[str], cfg: FinetuneConfig) -> torch.Tensor:
    return pooled(model, encoder, encoder.tokenize(texts, cfg.max_length), cfg.precision, cfg.group_size)


def step_loss(model: torch.nn.Module, encoder: Encoder, ds: Dataset, rows: np.ndarray, cfg: FinetuneConfig,
              dims: list[int]) -> torch.Tensor:
    """The supervised loss of one batch of a training file: ranking for triples, CoSENT for labelled pairs."""
    import torch

    columns = list(zip(*(ds.rows[i] for i in rows)))
    texts = [s for col in columns for s in col]
    emb = _embed(model, encoder, texts, cfg).split(len(rows))
    if ds.kind == "triples":
        return matryoshka_loss(lambda *e: ranking_loss(*e, cfg.scale), emb, dims)
    labels = torch.from_numpy(ds.labels[rows])
    return matryoshka_loss(lambda a, b: cosent_loss(a, b, labels, cfg.scale), emb, dims)


@dataclass
class Corpus:
    """Unlabeled sentences with the teacher's embeddings: most for the distillation MSE, the `held` ones
    (in no training pair) for the student-teacher agreement."""

    sentences: list[str]
    targets: np.ndarray
    train: np.ndarray
    held: np.ndarray
    seed: int

    def batch(self, step: int, size: int) -> np.ndarray:
        """Deterministic in `step`: consecutive slices of a seeded shuffle, reshuffled each pass."""
        epoch, within = divmod(step * size, len(self.train))
        order = np.random.default_rng([self.seed, epoch]).permutation(self.train)
        return order[within:within + size]


def load_corpus(cfg: FinetuneConfig, datasets: list[Dataset], work: Path, log: Log) -> Corpus:
    """The distillation corpus with the teacher's (cached) embeddings; held-out sentences in no training pair."""
    sentences = read_corpus(cfg.distill_corpus, cfg.distill_max_sentences or None)
    targets = teacher_embeddings(Path(cfg.teacher), sentences, Path(cfg.cache_dir or work / "cache"),
                                 TEACHER_MAX_LENGTH, log=log)
    in_pairs = {s for ds in datasets for row in ds.rows for s in row}
    held = min(AGREEMENT_SENTENCES, len(sentences) // 5)  # a small corpus keeps most of itself for training
    free = np.array([i for i in range(len(sentences) - 1, -1, -1) if sentences[i] not in in_pairs][:held], dtype=int)
    train = np.setdiff1d(np.arange(len(sentences)), free)
    log(f"distillation corpus: {len(train)} sentences; agreement on {len(free)} held-out sentences")
    return Corpus(sentences, targets, train, free, cfg.seed)


def distill_loss(model: torch.nn.Module, encoder: Encoder, corpus: Corpus, step: int, cfg: FinetuneConfig) -> torch.Tensor:
    """MSE between the student's and the teacher's (cached) embeddings of a batch of corpus sentences."""
    import torch

    rows = corpus.batch(step, cfg.distill_batch)
    pred = _embed(model, encoder, [corpus.sentences[i] for i in rows], cfg)
    return torch.nn.functional.mse_loss(pred, torch.from_numpy(np.asarray(corpus.targets[rows], dtype=np.float32)))


def agreement(encoder: Encoder, corpus: Corpus, pairs: int = 5000) -> float:
    """Spearman x 100 between the student's and the teacher's cosines of random pairs of held-out sentences."""
    from ..eval.suite import spearman

    student = encoder.encode([corpus.sentences[i] for i in corpus.held], batch_size=64, show_progress=False)
    teacher = np.asarray(corpus.targets[corpus.held], dtype=np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    i, j = np.random.default_rng(0).integers(0, len(corpus.held), size=(2, pairs))
    return 100 * spearman((student[i] * student[j]).sum(1), (teacher[i] * teacher[j]).sum(1))


def validation(encoder: Encoder, held_out: list[Dataset]) -> dict[str, float]:
    """Per held-out training file: Spearman x 100 of cosine and label (pairs), or the share of triples whose
    positive scores above their negative; and their mean, each file weighted by the square root of its held-out
    rows, so that a file of 6 rows (one triple moves it 17 points) does not count as much as one of 5,000. A file
    whose held-out labels are all equal has no Spearman, and is left out of the mean."""
    from ..eval.suite import spearman

    scores, weights = {}, {}
    for ds in held_out:
        weights[ds.name] = len(ds.rows) ** 0.5
        columns = [encoder.encode(list(col), batch_size=64, show_progress=False) for col in zip(*ds.rows)]
        if ds.kind == "triples":
            anchor, positive, negative = columns
            scores[ds.name] = 100 * float(np.mean((anchor * positive).sum(1) > (anchor * negative).sum(1)))
        else:
            scores[ds.name] = 100 * spearman((columns[0] * columns[1]).sum(1), ds.labels)
    finite = [name for name, v in scores.items() if np.isfinite(v)]
    if not finite:
        return {**scores, "mean": -float("inf")}
    mean = np.average([scores[n] for n in finite], weights=[weights[n] for n in finite])
    return {**scores, "mean": float(mean)}


def finetune(cfg: FinetuneConfig, resume: bool = False, log: Log = print) -> Path:
    work, out, ckpt_file = start_run(cfg, resume)
    evals = eval_sentences(Path(cfg.eval_data)) if cfg.eval_data and not cfg.allow_overlap else {}
    datasets, held_out = training_files(cfg.train, cfg.word_order_negatives, cfg.val_fraction, cfg.seed, evals)
    if cfg.hard_negatives:  # mined from the training part of each file only (same seed and fraction)
        datasets.append(read_triples(Path(cfg.hard_negatives)))
    if evals:
        problems = contamination(datasets, evals)
        if problems:
            raise ZhembedError("training data overlaps the evaluation splits: " + "; ".join(problems)
                               + " (pass --allow-overlap to train on it anyway)")
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / RUN_CONFIG, asdict(cfg))
    for ds in datasets:
        log(f"{ds.name}: {len(ds.rows)} {'triples' if ds.kind == 'triples' else 'pairs'} ({ds.kind})")

    if cfg.distill_weight and not (cfg.teacher and cfg.distill_corpus):
        raise ZhembedError("--distill-weight needs --teacher and --distill-corpus")
    corpus = load_corpus(cfg, datasets, work, log) if cfg.distill_weight else None
    encoder = Encoder.load(cfg.model, backend="torch")
    dims = [int(d) for d in cfg.matryoshka.split(",") if d] if cfg.matryoshka else []
    if any(not 0 < d <= encoder.dim for d in dims):
        raise ZhembedError(f"--matryoshka sizes must lie in 1..{encoder.dim}, got {cfg.matryoshka}")
    model = trainable_module(encoder)
    sampler = Sampler(datasets, cfg.batch_size, cfg.seed, cfg.size_exponent)
    run = Run.start(cfg, model, int(sampler.steps_per_epoch * cfg.epochs), ckpt_file, resume, -float("inf"), log)

    while not run.done:
        ds, rows = sampler.batch(cfg.data_offset + run.step)
        loss = step_loss(model, encoder, ds, rows, cfg, dims)
        if corpus is not None:
            loss = loss + cfg.distill_weight * distill_loss(model, encoder, corpus, cfg.data_offset + run.step, cfg)
        run.update(loss)
        if run.due(cfg.log_every):
            log(f"step {run.step}/{run.total} {ds.name} loss {loss.item():.4f} ({run.steps_per_second():.2f} steps/s, "
                f"{run.minutes_left():.1f} min left)")
        if run.due(cfg.eval_every):
            run.best = _evaluate(model, encoder, held_out, corpus, dims, run.best, run.step, run.total, cfg, out, log)
        run.checkpoint_if_due()
    log(f"done after {run.step} steps; model in {out}")
    return out


def _evaluate(model, encoder, held_out, corpus, dims, best, step, total, cfg, out, log) -> float:
    """Validation on the held-out training rows picks the model (the last one without validation); the
    agreement with the teacher is only reported. The evaluation splits are scored only after training."""
    model.eval()
    message, score = f"eval step {step}:", None
    if held_out:
        scores = validation(encoder, held_out)
        score = scores["mean"]
        message += " validation " + " ".join(f"{k} {v:.2f}" for k, v in scores.items())
    if corpus is not None:
        message += f" agreement {agreement(encoder, corpus):.2f}"
    if (score is not None and score > best) or (score is None and step == total):
        best = score if score is not None else best
        run = {"command": "finetune", "step": step, "validation": score, **asdict(cfg)}
        save_model(model, Path(cfg.model), out, run, dimensions=dims or None)
        message += " (best, saved)" if score is not None else " (saved)"
    log(message)
    model.train()
    return best
