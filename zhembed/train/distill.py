"""Distillation: a student made of the teacher's embeddings and a few of its layers learns to reproduce the
teacher's sentence embeddings (MSE, the seed's recipe) on unlabeled Chinese sentences.

Read top to bottom: config, student construction, data, the training loop with checkpoints and resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import replace_dir
from ..errors import ZhembedError
from ..modeldir import WEIGHTS_FILE, copy_model_files, read_model_config, update_config, write_json
from ..progress import Log
from ..runtime import Encoder
from ..textio import corpus_files, read_corpus
from .common import RUN_CONFIG, Batches, dev_spearman, save_model, start_run, trainable_module
from .run import Run
from .teacher_cache import teacher_embeddings


@dataclass
class DistillConfig:
    teacher: str
    out: str
    corpus: str                   # one file, or several separated by commas
    layers: str = "auto"          # "auto" or comma-separated 0-based teacher layers, e.g. "1,4,7,10"
    num_layers: int = 4           # with layers="auto"
    prune_vocab: bool = True
    epochs: int = 1
    batch_size: int = 64
    lr: float = 2e-4
    warmup: float = 0.1
    max_length: int = 256
    cos_weight: float = 0.0       # weight of an extra (1 - cosine) term beside the MSE
    max_sentences: int = 0        # 0: the whole corpus
    dev_sentences: int = 1000     # held out from training for the dev MSE
    seed: int = 42
    work_dir: str = "runs/distill"
    checkpoint_every: int = 200
    log_every: int = 20
    eval_every: int = 500
    eval_data: str = ""           # folder with csts_dev.tsv / lcqmc_dev.tsv for periodic dev Spearman
    threads: int = 0
    precision: str = "auto"       # the forward pass: "bf16" autocast, "fp32", or "auto" (bf16 where the CPU has it)


def choose_layers(spec: str, teacher_layers: int, num_layers: int) -> list[int]:
    """`auto` spaces `num_layers` evenly like the seed's 1,4,7,10 of 12; else parse and check the list."""
    if spec == "auto":
        if not 0 < num_layers <= teacher_layers:
            raise ZhembedError(f"cannot keep {num_layers} of {teacher_layers} teacher layers")
        step = teacher_layers / num_layers
        return [int(i * step + step / 2) for i in range(num_layers)]
    try:
        layers = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ZhembedError(f"--layers must be 'auto' or comma-separated integers, got {spec!r}") from None
    if not layers or any(not 0 <= x < teacher_layers for x in layers) or layers != sorted(set(layers)):
        raise ZhembedError(f"--layers {spec!r}: need increasing distinct layers in 0..{teacher_layers - 1}")
    return layers


def make_student(teacher_dir: Path, layers: list[int], out: Path) -> Path:
    """A copy of the teacher that keeps all embeddings and only the given encoder layers."""
    from safetensors.numpy import load_file, save_file

    state = load_file(str(Path(teacher_dir) / WEIGHTS_FILE))
    student = {}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            idx = int(key.split(".")[2])
            if idx in layers:
                student[key.replace(f"encoder.layer.{idx}.", f"encoder.layer.{layers.index(idx)}.", 1)] = value
        else:
            student[key] = value
    with replace_dir(Path(out)) as tmp:  # renamed into place only when complete
        copy_model_files(teacher_dir, tmp)
        save_file(student, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        update_config(tmp, num_hidden_layers=len(layers), zhembed_teacher_layers=layers)
    return out


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50) -> list[np.ndarray]:
    """A seeded shuffle cut into pools of `pool` batches, each pool sorted by length (little padding),
    and the batches shuffled again; the same seed gives the same batches (so resume is exact)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    for lo in range(0, len(order), batch_size * pool):
        chunk = order[lo:lo + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def distill(cfg: DistillConfig, resume: bool = False, log: Log = print) -> Path:
    work, out, ckpt_file = start_run(cfg, resume)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / RUN_CONFIG, asdict(cfg))

    # 1. The teacher's view of the corpus (cached), with a held-out dev slice.
    sentences = read_corpus(cfg.corpus, cfg.max_sentences or None)
    if len(sentences) <= cfg.dev_sentences:
        raise ZhembedError(f"corpus has {len(sentences)} sentences; need more than --dev-sentences {cfg.dev_sentences}")
    targets = teacher_embeddings(Path(cfg.teacher), sentences, work / "cache", cfg.max_length, log=log,
                                 threads=cfg.threads or None)
    train_n = len(sentences) - cfg.dev_sentences

    # 2. The student: pruned vocabulary, chosen layers.
    init_dir = _student_init(cfg, work, log)
    encoder = Encoder.load(init_dir)
    model = trainable_module(encoder)
    batches = Batches(encoder, sentences, cfg.max_length)

    # 3. Optimizer, schedule, resume.
    lengths = np.array([len(x) for x in batches.ids[:train_n]])
    steps_per_epoch = len(epoch_batches(lengths, cfg.batch_size, cfg.seed))
    run = Run.start(cfg, model, steps_per_epoch * cfg.epochs, ckpt_file, resume, float("inf"), log)

    # 4. Train.
    plan: dict[int, list[np.ndarray]] = {}
    while not run.done:
        epoch, within = divmod(run.step, steps_per_epoch)
        if epoch not in plan:
            plan = {epoch: epoch_batches(lengths, cfg.batch_size, cfg.seed + epoch)}
        loss = _loss(model, batches, targets, plan[epoch][within], cfg)
        run.update(loss)
        if run.due(cfg.log_every):
            rate = run.steps_per_second() * cfg.batch_size
            log(f"step {run.step}/{run.total} loss {loss.item():.6f} lr {run.lr:.2e} "
                f"({rate:.0f} sentences/s, {run.minutes_left():.1f} min left)")
        if run.due(cfg.eval_every):
            run.best = _evaluate(model, encoder, batches, targets, train_n, init_dir, out, run.best, cfg, run.step, log)
        run.checkpoint_if_due()
    log(f"done: best dev MSE {run.best:.6f}; model in {out}")
    return out


def _student_init(cfg: DistillConfig, work: Path, log: Log) -> Path:
    """Prune the teacher's vocabulary (optional) and keep the chosen layers; cached in the work dir, and
    rebuilt when the cached one was made with other layers (it is written whole or not at all)."""
    init_dir = work / "student-init"
    teacher = Path(cfg.teacher)
    layers = choose_layers(cfg.layers, read_model_config(teacher)["num_hidden_layers"], cfg.num_layers)
    if (init_dir / WEIGHTS_FILE).exists():
        if read_model_config(init_dir).get("zhembed_teacher_layers") == layers:
            return init_dir
        log(f"{init_dir} keeps other teacher layers; rebuilding it")
    source = teacher
    if cfg.prune_vocab:
        from ..make.prune_vocab import prune_vocab

        source = work / "teacher-pruned"
        log(f"pruning the vocabulary: {prune_vocab(teacher, corpus_files(cfg.corpus), source)}")
    make_student(source, layers, init_dir)
    log(f"student keeps teacher layers {layers}")
    return init_dir


def _loss(model, batches: Batches, targets, rows, cfg: DistillConfig):
    import torch

    pred = batches.embed(model, rows, cfg.precision)
    target = torch.from_numpy(np.asarray(targets[rows], dtype=np.float32))
    loss = torch.nn.functional.mse_loss(pred, target)
    if cfg.cos_weight:
        loss = loss + cfg.cos_weight * (1 - torch.nn.functional.cosine_similarity(pred, target).mean())
    return loss


def _evaluate(model, encoder, batches, targets, train_n, init_dir, out, best, cfg, step, log) -> float:
    """Dev MSE on the held-out sentences (and dev Spearman if eval data is given); save the best model."""
    import torch

    model.eval()
    dev = np.arange(train_n, len(batches.ids))
    with torch.inference_mode():
        preds = [batches.embed(model, dev[lo:lo + 128]) for lo in range(0, len(dev), 128)]
    mse = torch.nn.functional.mse_loss(torch.cat(preds), torch.from_numpy(np.asarray(targets[dev], np.float32))).item()
    message = f"eval step {step}: dev MSE {mse:.6f}"
    if cfg.eval_data:
        message += " " + dev_spearman(encoder, Path(cfg.eval_data))
    if mse < best:
        best = mse
        save_model(model, init_dir, out, {"command": "distill", "step": step, "dev_mse": mse, **asdict(cfg)})
        message += " (best, saved)"
    log(message)
    model.train()
    return best


