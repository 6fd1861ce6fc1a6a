"""Fine-tuning on labelled Chinese pairs: CoSENT for graded and binary labels, in-batch-negative ranking
(with the contradiction as a hard negative) for NLI triples, datasets sampled by size, and an optional
distillation MSE against the teacher that keeps general ability.

Read top to bottom: config, data (with the contamination guard), losses, the training loop.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..eval.suite import PairTask
from ..modeldir import write_json
from ..runtime import Encoder
from .common import (Batches, check_out_dir, dev_spearman, load_checkpoint, lr_at, mean_pool, optimizer_step,
                     refuse_to_overwrite, save_checkpoint, save_model)


@dataclass
class FinetuneConfig:
    model: str
    train: list[str]
    out: str
    eval_data: str = ""           # folder of evaluation TSVs: the contamination guard and dev checks
    allow_overlap: bool = False
    teacher: str = ""             # with distill_weight > 0: MSE towards the teacher's embeddings
    distill_weight: float = 0.0
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


def eval_sentences(eval_dir: Path) -> dict[str, set[str]]:
    """Sentences of every evaluation split in the folder, by file name."""
    files = sorted(Path(eval_dir).glob("*.tsv"))
    if not files:
        raise ZhembedError(f"--eval-data {eval_dir}: no .tsv evaluation splits found")
    tasks = {f.name: PairTask.load(f) for f in files}
    return {name: set(t.first) | set(t.second) for name, t in tasks.items()}


def contamination(datasets: list[Dataset], eval_dir: Path) -> list[str]:
    """One line per training file with rows that share a sentence with an evaluation split."""
    evals = eval_sentences(eval_dir)
    every = set().union(*evals.values())
    problems = []
    for ds in datasets:
        hits = [row for row in ds.rows if any(s in every for s in row)]
        if hits:
            splits = sorted(name for name, sents in evals.items() if any(s in sents for row in hits for s in row))
            problems.append(f"{ds.name}: {len(hits)} of {len(ds.rows)} rows share a sentence with {', '.join(splits)}")
    return problems


def cosent_loss(a, b, labels, scale: float):
    """CoSENT: every pair ranked above another by label must also be ranked above it by cosine."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a, b) * scale
    diff = cos[None, :] - cos[:, None]            # diff[i, j] = cos_j - cos_i
    mask = labels[:, None] > labels[None, :]      # i should score above j
    diff = diff[mask]
    return torch.logsumexp(torch.cat([torch.zeros(1, dtype=diff.dtype), diff]), dim=0)


def ranking_loss(anchor, positive, negative, scale: float):
    """In-batch negatives: each anchor must pick its own positive among all positives and hard negatives."""
    import torch

    candidates = torch.nn.functional.normalize(torch.cat([positive, negative]), dim=-1)
    logits = torch.nn.functional.normalize(anchor, dim=-1) @ candidates.T * scale
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(anchor)))


class Sampler:
    """Per step: a dataset drawn in proportion to its size, then the next batch of its own shuffle."""

    def __init__(self, datasets: list[Dataset], batch_size: int, seed: int):
        self.datasets, self.batch_size, self.seed = datasets, batch_size, seed
        sizes = np.array([len(d.rows) for d in datasets], dtype=float)
        self.steps_per_epoch = int(sizes.sum() // batch_size)
        self.choice = np.random.default_rng(seed).choice(len(datasets), size=self.steps_per_epoch * 100,
                                                         p=sizes / sizes.sum())

    def batch(self, step: int) -> tuple[Dataset, np.ndarray]:
        """Deterministic in `step`, so a resumed run sees the same batches."""
        which = int(self.choice[step % len(self.choice)])
        ds = self.datasets[which]
        seen = int((self.choice[:step % len(self.choice)] == which).sum())
        per_epoch = max(1, len(ds.rows) // self.batch_size)
        epoch, within = divmod(seen, per_epoch)
        order = np.random.default_rng([self.seed, which, epoch]).permutation(len(ds.rows))
        return ds, order[within * self.batch_size:(within + 1) * self.batch_size]


def _embed(model, encoder, texts: list[str], max_length: int):
    batches = Batches(encoder, texts, max_length)
    input_ids, mask = batches.tensors(range(len(texts)))
    return mean_pool(model(input_ids=input_ids, attention_mask=mask).last_hidden_state, mask)


def step_loss(model, encoder, teacher, ds: Dataset, rows: np.ndarray, cfg: FinetuneConfig):
    import torch

    columns = list(zip(*(ds.rows[i] for i in rows)))
    texts = [s for col in columns for s in col]
    emb = _embed(model, encoder, texts, cfg.max_length).split(len(rows))
    if ds.kind == "triples":
        loss = ranking_loss(*emb, cfg.scale)
    else:
        loss = cosent_loss(emb[0], emb[1], torch.from_numpy(ds.labels[rows]), cfg.scale)
    if teacher is not None and cfg.distill_weight:
        target = torch.from_numpy(teacher.encode(texts, max_length=cfg.max_length, normalize=False))
        loss = loss + cfg.distill_weight * torch.nn.functional.mse_loss(torch.cat(emb), target)
    return loss


def finetune(cfg: FinetuneConfig, resume: bool = False, log=print) -> Path:
    import torch

    torch.manual_seed(cfg.seed)
    work, out = Path(cfg.work_dir), Path(cfg.out)
    check_out_dir(out)
    ckpt_file = refuse_to_overwrite(work / "checkpoint.pt", resume)
    datasets = [load_dataset(Path(p)) for p in cfg.train]
    if cfg.eval_data and not cfg.allow_overlap:
        problems = contamination(datasets, Path(cfg.eval_data))
        if problems:
            raise ZhembedError("training data overlaps the evaluation splits: " + "; ".join(problems)
                               + " (pass --allow-overlap to train on it anyway)")
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", asdict(cfg))
    for ds in datasets:
        log(f"{ds.name}: {len(ds.rows)} {'triples' if ds.kind == 'triples' else 'pairs'} ({ds.kind})")

    encoder = Encoder.load(cfg.model, backend="torch")
    model = encoder.backend.model.train()
    teacher = Encoder.load(cfg.teacher, backend="torch") if cfg.teacher and cfg.distill_weight else None
    sampler = Sampler(datasets, cfg.batch_size, cfg.seed)
    total = int(sampler.steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    step = 0
    if resume and ckpt_file.exists():
        step = load_checkpoint(ckpt_file, model, opt, asdict(cfg))["step"]
        log(f"resumed at step {step}/{total}")

    start, start_step = time.time(), step
    while step < total:
        ds, rows = sampler.batch(step)
        loss = step_loss(model, encoder, teacher, ds, rows, cfg)
        optimizer_step(model, opt, loss, lr_at(step, total, cfg))
        step += 1
        if step % cfg.log_every == 0 or step == total:
            rate = (step - start_step) / (time.time() - start)
            log(f"step {step}/{total} {ds.name} loss {loss.item():.4f} ({rate:.2f} steps/s, "
                f"{(total - step) / rate / 60:.1f} min left)")
        if cfg.eval_data and (step % cfg.eval_every == 0 or step == total):
            model.eval()  # monitoring only: the evaluation splits never choose the model
            log(f"eval step {step}: {dev_spearman(encoder, Path(cfg.eval_data))}")
            model.train()
        if step % cfg.checkpoint_every == 0 or step == total:
            save_checkpoint(ckpt_file, model, opt, step, 0.0, asdict(cfg))
    save_model(model, Path(cfg.model), out, {"command": "finetune", "step": step, **asdict(cfg)})
    log(f"done after {step} steps; model in {out}")
    return out
