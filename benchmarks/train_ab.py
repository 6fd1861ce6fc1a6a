"""Before/after check of a refactor of training (#23): the same seeded 200-step distillation (a tiny 4-layer
teacher, 4,000 corpus sentences, batch 16) and ~200-step fine-tune (6,400 lcqmc_train pairs, batch 32), every
loss logged, so two checkouts can be compared line by line:

    PYTHONPATH=/path/to/old/checkout python benchmarks/train_ab.py /tmp/ab-old
    python benchmarks/train_ab.py /tmp/ab-new && diff /tmp/ab-old/losses.log /tmp/ab-new/losses.log
"""
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_tiny_bert
import zhembed
from zhembed.train.distill import DistillConfig, distill
from zhembed.train.finetune import FinetuneConfig, finetune
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
print("zhembed from", zhembed.__file__, file=sys.stderr)
teacher = make_tiny_bert(out / "teacher", layers=4)
D = Path(__file__).resolve().parents[2] / "shared" / "data"
lines = [l for l in itertools.islice(open(D / "corpus/sentences.txt", encoding="utf-8"), 4000)]
(out / "corpus.txt").write_text("".join(lines), encoding="utf-8")
log = open(out / "losses.log", "w")
def L(m):
    if m.startswith("step") or m.startswith("eval") or m.startswith("done"):
        log.write(m.split(" (")[0] + "\n")
cfg = DistillConfig(teacher=str(teacher), out=str(out / "student"), corpus=str(out / "corpus.txt"), layers="1,3",
                    batch_size=16, max_length=64, dev_sentences=800, work_dir=str(out / "dw"), log_every=1,
                    eval_every=100, checkpoint_every=100, prune_vocab=False)
distill(cfg, log=L)
pairs = list(itertools.islice(open(D / "train/lcqmc_train.tsv", encoding="utf-8"), 6400))
(out / "lcqmc.tsv").write_text("".join(pairs), encoding="utf-8")
fcfg = FinetuneConfig(model=str(out / "student"), train=[str(out / "lcqmc.tsv")], out=str(out / "ft"),
                      work_dir=str(out / "fw"), epochs=1.0, batch_size=32,
                      val_fraction=0.03, log_every=1, eval_every=100, checkpoint_every=100, matryoshka="32,16")
finetune(fcfg, log=L)
log.close()
