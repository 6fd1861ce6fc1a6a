"""Hard-negative mining: negatives come from the corpus, from the student's ranks 10-100, never from the
validation share, and the teacher vetoes near-duplicates of the positive; fine-tuning trains on them."""

from __future__ import annotations

import numpy as np

from zhembed.train.finetune import FinetuneConfig, finetune, load_dataset, split_validation
from zhembed.train.negatives import MineConfig, choose, mine


def _write(path, rows):
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")
    return path


def test_the_teacher_vetoes_candidates_as_close_to_the_positive_as_the_anchor():
    teacher = np.eye(4, dtype=np.float32)
    teacher[2] = [0.0, 0.9, 0.0, np.sqrt(1 - 0.81)]   # candidate 2: a near-duplicate of the positive (vector 1)
    positive = teacher[1]
    assert choose(np.array([0, 2, 3]), 0.5, positive, teacher, skip={0}) == 3
    assert choose(np.array([2]), 0.5, positive, teacher, skip=set()) is None
    assert choose(np.array([2]), 0.95, positive, teacher, skip=set()) == 2  # the anchor itself is closer still


def test_mined_triples_leave_validation_out_and_train(tmp_path, tiny_bert):
    from conftest import SENTENCES, make_tiny_bert

    pairs = _write(tmp_path / "qm_train.tsv", [(SENTENCES[i], SENTENCES[i + 1], i % 2) for i in range(0, 60, 2)])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    teacher = make_tiny_bert(tmp_path / "teacher", layers=2, seed=3)
    out = mine(MineConfig(model=str(tiny_bert), train=[str(pairs)], corpus=str(corpus), teacher=str(teacher),
                          out=str(tmp_path / "neg.tsv"), val_fraction=0.2, rank_min=2, rank_max=20),
               log=lambda m: None)
    triples = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    held = split_validation(load_dataset(pairs), 0.2, 42)[1]
    held_rows = {tuple(r) for r, label in zip(held.rows, held.labels)}
    assert triples and all((a, p) not in held_rows for a, p, _ in triples)
    assert all(n in {s.strip() for s in SENTENCES} and n not in (a, p) for a, p, n in triples)
    messages = []
    finetune(FinetuneConfig(model=str(tiny_bert), train=[str(pairs)], out=str(tmp_path / "ft"), hard_negatives=str(out),
                            val_fraction=0.2, batch_size=4, epochs=1, work_dir=str(tmp_path / "work"), log_every=1000,
                            eval_every=1000), log=messages.append)
    assert any(m.startswith(f"hard_negatives: {len(triples)} triples") for m in messages)
