"""Hard negatives for the ranking loss, mined from the corpus.

For each positive training pair (anchor, positive) the student ranks the corpus by similarity to the anchor;
the negative is the best-ranked sentence between ranks `rank_min` and `rank_max` that the teacher does not
score as a near-duplicate of the positive, i.e. that the teacher finds less similar to the positive than the
anchor is (such a sentence is more likely an unlabelled paraphrase than a negative). Only the training part
of each file is mined: the same seeded share that fine-tuning holds out for validation is left out here.

Read top to bottom: config, positive pairs, teacher vectors, the search, the choice, the output file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_text_atomic
from ..errors import ZhembedError, require
from ..progress import Log, progress
from ..runtime import Encoder
from ..runtime.pooling import normalize
from ..textio import read_corpus
from .finetune import load_dataset, split_validation
from .teacher_cache import TEACHER_MAX_LENGTH, teacher_embeddings

if TYPE_CHECKING:
    import faiss


@dataclass
class MineConfig:
    model: str                    # the student that ranks the corpus
    train: list[str]              # the fine-tuning files (their positive pairs get a negative each)
    corpus: str                   # unlabeled sentences (comma-separated files): where negatives come from
    teacher: str
    out: str                      # TSV: anchor, positive, negative
    cache_dir: str = ""           # the teacher-embedding cache (a distill run's work-dir/cache is reused)
    val_fraction: float = 0.0     # as fine-tuning's: that share of each file is not mined
    seed: int = 42                # as fine-tuning's
    rank_min: int = 10
    rank_max: int = 100
    max_length: int = 64
    threads: int = 0


def positive_pairs(cfg: MineConfig) -> list[tuple[str, str]]:
    """Distinct (anchor, positive) pairs: rows of the scored files that carry the file's top label (1 of 0/1,
    2 of QBQTC's 0/1/2, 5 of STS), from the part fine-tuning trains on."""
    pairs: dict[tuple[str, str], None] = {}
    for path in cfg.train:
        ds = load_dataset(Path(path))
        if ds.kind != "cosent":
            continue
        if cfg.val_fraction:
            ds = split_validation(ds, cfg.val_fraction, cfg.seed)[0]
        top = ds.labels.max()
        pairs.update(((a, b), None) for (a, b), label in zip(ds.rows, ds.labels) if label == top and a != b)
    if not pairs:
        raise ZhembedError("no positive pairs in --train: hard negatives need files with 0/1 or graded labels")
    return list(pairs)


def teacher_vectors(cfg: MineConfig, sentences: list[str], extra: list[str], log: Log) -> tuple[np.ndarray, np.ndarray]:
    """Unit teacher vectors of the corpus (its cache) and of `extra` sentences that are not in it."""
    cache = Path(cfg.cache_dir or Path(cfg.out).parent / "cache")
    corpus = teacher_embeddings(Path(cfg.teacher), sentences, cache, TEACHER_MAX_LENGTH, log=log,
                                threads=cfg.threads or None)
    others = (teacher_embeddings(Path(cfg.teacher), extra, cache, TEACHER_MAX_LENGTH, log=log, threads=cfg.threads or None)
              if extra else np.zeros((0, corpus.shape[1]), np.float16))
    return normalize(np.array(corpus, np.float32)), normalize(np.array(others, np.float32))


def choose(candidates: np.ndarray, anchor_pos: float, teacher_pos: np.ndarray, teacher: np.ndarray,
           skip: set[int]) -> int | None:
    """The first candidate (by the student's rank) not in `skip` whose teacher similarity to the positive
    stays below the anchor's; None when there is none."""
    scores = teacher[candidates] @ teacher_pos
    for c, s in zip(candidates, scores):
        if c >= 0 and int(c) not in skip and s < anchor_pos:
            return int(c)
    return None


def rank(index: faiss.Index, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """The ids of each query's k nearest corpus sentences, in chunks under a progress bar (exact search of a
    few hundred thousand anchors in a corpus as large takes minutes on 2 cores)."""
    starts = progress(range(0, len(queries), chunk), desc="rank", unit="chunk")  # a range: tqdm knows its length
    return np.concatenate([index.search(queries[i:i + chunk], k)[1] for i in starts])


def mine(cfg: MineConfig, log: Log = print) -> Path:
    require("search", "zhembed mine-negatives", ("faiss",))
    import faiss

    if not 0 <= cfg.rank_min < cfg.rank_max:
        raise ZhembedError(f"need 0 <= --rank-min < --rank-max, got {cfg.rank_min} and {cfg.rank_max}")
    pairs = positive_pairs(cfg)
    sentences = read_corpus(cfg.corpus)
    where = {s: i for i, s in enumerate(sentences)}
    missing = sorted({s for pair in pairs for s in pair if s not in where})
    log(f"{len(pairs)} positive pairs; corpus {len(sentences)} sentences; {len(missing)} pair sentences not in it")
    teacher, extra = teacher_vectors(cfg, sentences, missing, log)
    extra_at = {s: i for i, s in enumerate(missing)}

    def teacher_of(s: str) -> np.ndarray:
        return teacher[where[s]] if s in where else extra[extra_at[s]]

    encoder = Encoder.load(cfg.model, num_threads=cfg.threads or None)
    log(f"encoding the corpus with {cfg.model} ({encoder.backend.name})")
    index = faiss.IndexFlatIP(encoder.dim)
    index.add(encoder.encode(sentences, batch_size=64, max_length=cfg.max_length, show_progress=True))
    anchors = encoder.encode([a for a, _ in pairs], batch_size=64, max_length=cfg.max_length,
                             show_progress=True)
    ranked = rank(index, anchors, cfg.rank_max)
    rows, none = [], 0
    for (a, p), candidates in zip(pairs, ranked):
        t_pos = teacher_of(p)
        skip = {where[s] for s in (a, p) if s in where}
        c = choose(candidates[cfg.rank_min:], float(teacher_of(a) @ t_pos), t_pos, teacher, skip)
        if c is None:
            none += 1
        else:
            rows.append(f"{a}\t{p}\t{sentences[c]}\n")
    log(f"hard negatives for {len(rows)} pairs ({none} had no candidate in ranks {cfg.rank_min}-{cfg.rank_max})")
    write_text_atomic(Path(cfg.out), "".join(rows))
    return Path(cfg.out)

