"""Distil and train a static model (zhembed-static-zh) from a transformer model directory.

The recipe, read top to bottom:
1. Targets: the transformer's vectors of corpus sentences (its int8 ONNX, cached and resumable by chunk).
2. A start for the table: each vocabulary piece encoded alone by the transformer (as model2vec distils),
   projected onto the top `pca_dims` principal axes of the target sentence vectors, and weighted by
   SIF (a / (a + p), p the piece's frequency in the corpus).
3. Regression, as tokenlearn trains: each corpus sentence's mean of table rows must point where the
   transformer's (projected) vector points (cosine loss).
4. Contrastive training on the labelled pairs: CoSENT on graded and binary pairs, in-batch ranking on
   triples, with the regression loss kept beside it; the same contamination guard and validation carve-out
   as fine-tuning, and the validation mean picks the table that is saved.

model2vec's `distill` is not called: it rebuilds the tokenizer (and so moves `<unk>`), and its extra pins an
older transformers. Encoding each piece with our own runtime is the same computation, on the same engine that
makes the targets. The vocabulary is the transformer's own (XLM-R Unigram pieces, many of them words).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError
from ..modeldir import SentenceConfig, read_tokenizer_json, write_json, write_static_model
from ..progress import Log
from ..runtime import Encoder
from ..runtime.encoder import StaticEncoder
from ..runtime.pooling import normalize
from ..textio import read_corpus
from .common import RUN_CONFIG, RUN_MARKER, check_out_dir, lr_at, start_run
from .finetune import (AGREEMENT_SENTENCES, Corpus, Dataset, Sampler, agreement, contamination, cosent_loss,
                       eval_sentences, load_dataset, ranking_loss, split_validation, validation)
from .run import Run
from .teacher_cache import TEACHER_MAX_LENGTH, teacher_embeddings

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

PIECE_BATCH = 512


@dataclass
class StaticConfig:
    model: str                    # the transformer to distil
    out: str
    corpus: str                   # comma-separated sentence files: piece frequencies and regression targets
    train: list[str]              # labelled pair files for step 4 (none: regression only)
    eval_data: str = ""           # folder of evaluation TSVs: the contamination guard
    val_fraction: float = 0.03    # as fine-tuning's, so both hold out the same rows
    max_sentences: int = 0        # 0: the whole corpus
    pca_dims: int = 256
    sif: float = 1e-4
    regression_epochs: float = 2.0
    pair_epochs: float = 6.0
    regression_batch: int = 1024
    batch_size: int = 256         # pairs per contrastive step
    regression_weight: float = 10.0  # of the regression loss during step 4
    lr: float = 2e-3              # step 3's peak learning rate (Adam; warm-up, then linear decay)
    pair_lr: float = 5e-4         # step 4's, on a schedule of its own
    warmup: float = 0.05
    scale: float = 20.0
    seed: int = 42
    threads: int = 0
    work_dir: str = "runs/distill-static"
    cache_dir: str = ""           # the transformer-vector cache (default WORK_DIR/cache)
    checkpoint_every: int = 500
    eval_every: int = 500
    log_every: int = 100


def static_tokenizer(model_dir: Path) -> Tokenizer:
    """The transformer's tokenizer without special tokens, padding or truncation (as StaticEmbedding reads)."""
    from tokenizers import Tokenizer

    spec = {**read_tokenizer_json(model_dir), "post_processor": None, "truncation": None, "padding": None}
    if not spec.get("model"):
        raise ZhembedError(f"{model_dir} has no tokenizer.json: distill-static needs one")
    return Tokenizer.from_str(json.dumps(spec))


def piece_vectors(encoder: Encoder, vocab_size: int, log: Log) -> np.ndarray:
    """[vocab, dim] unit vectors: each piece alone between the prompt and the end token, through the model."""
    frame = encoder.tokenize([""], 64)[0]  # <s> prompt ... </s>
    rows = []
    for lo in range(0, vocab_size, PIECE_BATCH):
        ids = [frame[:-1] + [t] + frame[-1:] for t in range(lo, min(lo + PIECE_BATCH, vocab_size))]
        rows.append(encoder.embed_ids(ids))
    log(f"piece vectors: {vocab_size} pieces encoded alone")
    return np.concatenate(rows)


def sif_weights(token_ids: list[list[int]], vocab_size: int, a: float) -> np.ndarray:
    """a / (a + p) per piece, p its share of all corpus tokens (unseen pieces weigh 1)."""
    counts = np.bincount(np.concatenate([np.asarray(t, dtype=np.int64) for t in token_ids if t]), minlength=vocab_size)
    return (a / (a + counts / max(1, counts.sum()))).astype(np.float32)


def principal_axes(vectors: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, [dim, dims] top principal axes) of the rows."""
    mean = vectors.mean(axis=0)
    centered = vectors - mean
    _, axes = np.linalg.eigh(centered.T @ centered)
    return mean, np.ascontiguousarray(axes[:, ::-1][:, :dims])


class Bags:
    """Token ids of many texts, gathered into the flat ids and offsets that an EmbeddingBag takes."""

    def __init__(self, token_ids: list[list[int]]) -> None:
        self.lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_ids]) if token_ids else np.zeros(0, np.int64)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat ids, offsets) of these texts."""
        import torch

        lengths, starts = self.lengths[rows], self.starts[rows]
        flat = np.concatenate([self.flat[s:s + n] for s, n in zip(starts, lengths)])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return torch.from_numpy(flat), torch.from_numpy(offsets)


def embed(bag: torch.nn.EmbeddingBag, bags: Bags, rows: np.ndarray) -> torch.Tensor:
    """Each text's mean of table rows."""
    return bag(*bags.batch(rows))


def regression_loss(bag: torch.nn.EmbeddingBag, bags: Bags, targets: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """1 - cosine between each sentence's mean of rows and its target."""
    import torch

    return 1 - torch.nn.functional.cosine_similarity(embed(bag, bags, rows), targets[rows]).mean()


def pair_loss(bag: torch.nn.EmbeddingBag, pair_bags: dict[str, list[Bags]], ds: Dataset, rows: np.ndarray, scale: float) -> torch.Tensor:
    """CoSENT for a pairs file, in-batch ranking for a triples file."""
    import torch

    columns = [embed(bag, b, rows) for b in pair_bags[ds.name]]
    if ds.kind == "triples":
        return ranking_loss(*columns, scale)
    return cosent_loss(*columns, torch.from_numpy(ds.labels[rows]), scale)


def load_pairs(cfg: StaticConfig, log: Log) -> tuple[list[Dataset], list[Dataset]]:
    """(training part, validation part) of every --train file, after the contamination guard."""
    datasets = [load_dataset(Path(p)) for p in cfg.train]
    held: list[Dataset] = []
    if cfg.val_fraction and datasets:
        datasets, held = map(list, zip(*(split_validation(ds, cfg.val_fraction, cfg.seed) for ds in datasets)))
    if cfg.eval_data:
        problems = contamination(datasets, eval_sentences(Path(cfg.eval_data)))
        if problems:
            raise ZhembedError("training data overlaps the evaluation splits: " + "; ".join(problems))
    for ds in datasets:
        log(f"{ds.name}: {len(ds.rows)} {'triples' if ds.kind == 'triples' else 'pairs'} ({ds.kind})")
    return datasets, held


def load_corpus(cfg: StaticConfig, datasets: list[Dataset], work: Path, log: Log) -> Corpus:
    """Corpus sentences with the transformer's unit vectors; AGREEMENT_SENTENCES in no pair held out."""
    sentences = read_corpus(cfg.corpus, cfg.max_sentences or None, cfg.seed)
    vectors = teacher_embeddings(Path(cfg.model), sentences, Path(cfg.cache_dir or work / "cache"),
                                 TEACHER_MAX_LENGTH, log=log, threads=cfg.threads or None)
    in_pairs = {s for ds in datasets for row in ds.rows for s in row}
    order = np.random.default_rng(cfg.seed).permutation(len(sentences))
    held = np.array([i for i in order if sentences[i] not in in_pairs][:AGREEMENT_SENTENCES], dtype=int)
    train = np.setdiff1d(np.arange(len(sentences)), held)
    log(f"regression corpus: {len(train)} sentences; agreement on {len(held)} held-out sentences")
    return Corpus(sentences, normalize(np.array(vectors, dtype=np.float32)), train, held, cfg.seed)


def initial_table(cfg: StaticConfig, transformer: Encoder, tokenizer: Tokenizer, corpus: Corpus,
                  corpus_ids: list[list[int]], work: Path, log: Log) -> tuple[np.ndarray, np.ndarray]:
    """(table [vocab, pca_dims], projected unit targets) from steps 2 and 3's start; the table is cached."""
    mean, axes = principal_axes(corpus.targets, cfg.pca_dims)
    targets = normalize((corpus.targets - mean) @ axes)
    start_file = work / "initial_table.npy"
    if start_file.exists():
        return np.load(start_file), targets
    vocab = tokenizer.get_vocab_size()
    pieces = piece_vectors(transformer, vocab, log)
    table = normalize((pieces - mean) @ axes) * sif_weights(corpus_ids, vocab, cfg.sif)[:, None]
    np.save(start_file, table.astype(np.float32))
    return table.astype(np.float32), targets


def save_table(bag: torch.nn.EmbeddingBag, tokenizer: Tokenizer, out: Path, run: dict) -> None:
    """The table as a static model directory, with the run's record, swapped in whole."""
    from ..atomic import replace_dir

    check_out_dir(out)
    with replace_dir(out) as tmp:
        write_static_model(tmp, tokenizer, bag.weight.detach().numpy())
        write_json(tmp / RUN_MARKER, run)


def score(bag: torch.nn.EmbeddingBag, tokenizer: Tokenizer, held: list[Dataset], corpus: Corpus) -> dict[str, float]:
    """Validation (held-out pairs) and agreement with the transformer, of the table as it is now."""
    encoder = StaticEncoder(Path("."), tokenizer, bag.weight.detach().numpy(), SentenceConfig())
    scores = validation(encoder, held) if held else {"mean": -float("inf")}
    return {**scores, "agreement": agreement(encoder, corpus)}


def distill_static(cfg: StaticConfig, resume: bool = False, log: Log = print) -> Path:
    import torch

    work, out, ckpt_file = start_run(cfg, resume)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / RUN_CONFIG, asdict(cfg))

    datasets, held = load_pairs(cfg, log)
    corpus = load_corpus(cfg, datasets, work, log)
    transformer = Encoder.load(cfg.model, num_threads=cfg.threads or None)
    tokenizer = static_tokenizer(transformer.path)
    static = StaticEncoder(Path("."), tokenizer, np.zeros((1, 1), np.float32), SentenceConfig())
    corpus_ids = static.tokenize(corpus.sentences, TEACHER_MAX_LENGTH)
    table, targets = initial_table(cfg, transformer, tokenizer, corpus, corpus_ids, work, log)
    corpus_bags, targets = Bags(corpus_ids), torch.from_numpy(targets)
    pair_bags = {ds.name: [Bags(static.tokenize(list(col), TEACHER_MAX_LENGTH)) for col in zip(*ds.rows)]
                 for ds in datasets}

    bag = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(table), freeze=False, mode="mean")
    regression_steps = int(cfg.regression_epochs * len(corpus.train) / cfg.regression_batch)
    sampler = Sampler(datasets, cfg.batch_size, cfg.seed) if datasets else None
    total = regression_steps + (int(sampler.steps_per_epoch * cfg.pair_epochs) if sampler else 0)
    adam = torch.optim.Adam(bag.parameters(), lr=cfg.lr)
    run = replace(Run.start(cfg, bag, total, ckpt_file, resume, -float("inf"), log, adam), clip=None,
                  schedule=lambda step: learning_rate(step, regression_steps, total, cfg))

    while not run.done:
        loss = regression_loss(bag, corpus_bags, targets, corpus.batch(run.step, cfg.regression_batch))
        name = "regression"
        if run.step >= regression_steps:
            ds, pair_rows = sampler.batch(run.step - regression_steps)
            loss = pair_loss(bag, pair_bags, ds, pair_rows, cfg.scale) + cfg.regression_weight * loss
            name = ds.name
        run.update(loss)
        if run.due(cfg.log_every):
            log(f"step {run.step}/{total} {name} loss {loss.item():.4f} ({run.steps_per_second():.1f} steps/s, "
                f"{run.minutes_left():.1f} min left)")
        if run.due(cfg.eval_every) or run.step == regression_steps:
            run.best = _evaluate(bag, tokenizer, held, corpus, run.best, run.step, cfg, out, log)
        run.checkpoint_if_due()
    log(f"done after {run.step} steps; model in {out}")
    return out


def learning_rate(step: int, regression_steps: int, total: int, cfg: StaticConfig) -> float:
    """Each step's own warm-up and decay: regression at `lr`, then the pairs at `pair_lr`."""
    if step < regression_steps:
        return lr_at(step, regression_steps, cfg)
    return lr_at(step - regression_steps, total - regression_steps, cfg) * cfg.pair_lr / cfg.lr


def _evaluate(bag, tokenizer, held, corpus, best, step, cfg, out, log) -> float:
    scores = score(bag, tokenizer, held, corpus)
    message = f"eval step {step}: " + " ".join(f"{k} {v:.2f}" for k, v in scores.items())
    value = scores["mean"] if held else scores["agreement"]
    if value > best:
        best = value
        save_table(bag, tokenizer, out, {"command": "distill-static", "step": step, "validation": scores, **asdict(cfg)})
        message += " (best, saved)"
    log(message)
    return best
