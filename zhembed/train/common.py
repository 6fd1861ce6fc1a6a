"""Pieces every training loop shares: token batches, mean pooling in torch, the optimizer step and schedule,
checkpoints, saving a trained model as a model directory, and the periodic dev check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..atomic import replace_dir, write_atomic
from ..errors import ZhembedError
from ..modeldir import WEIGHTS_FILE, copy_model_files, set_dimensions, update_config, write_json
from ..progress import Log

if TYPE_CHECKING:  # torch is imported where a function needs it: the module loads without the [train] extra
    import torch

    from ..runtime import Encoder


RUN_MARKER = "zhembed_run.json"  # in every model directory a training run writes: which run wrote it
RUN_CONFIG = "run_config.json"   # in a run's work dir: the settings it was started with


class TrainSettings(Protocol):
    """What the shared pieces read from every recipe's config dataclass."""

    lr: float
    warmup: float
    seed: int
    threads: int
    work_dir: str
    out: str
    checkpoint_every: int


def check_out_dir(out: Path) -> None:
    """A run writes its model only into a new or empty folder, or one an earlier zhembed run wrote."""
    out = Path(out)
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / RUN_MARKER).exists()):
        raise ZhembedError(f"--out {out} exists and was not written by a zhembed run; "
                           "choose a new folder (zhembed replaces the whole folder it writes)")


def save_model(model: torch.nn.Module, src_dir: Path, out: Path, run: dict, fp16: bool = True,
               dimensions: list[int] | None = None) -> None:
    """Write a trained BertModel as a sentence-transformers directory (fp16 weights, fp32 compute), with the
    run's settings in zhembed_run.json and the Matryoshka sizes it was trained for, if any. The folder is
    built beside `out` and swapped in whole."""
    import torch
    from safetensors.torch import save_file

    check_out_dir(out)
    with replace_dir(out) as tmp:
        copy_model_files(src_dir, tmp)
        (tmp / RUN_MARKER).unlink(missing_ok=True)
        state = {k: v.detach().to(torch.float16 if fp16 else torch.float32).contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        update_config(tmp, dtype="float32")  # so AutoModel (dtype="auto") computes in fp32 on the CPU
        write_json(tmp / RUN_MARKER, run)
        if dimensions:
            set_dimensions(tmp, dimensions)


def trainable_module(encoder: Encoder) -> torch.nn.Module:
    """The torch module behind an encoder loaded with backend="torch", in train mode."""
    from ..runtime.backends import TorchBackend

    if not isinstance(encoder.backend, TorchBackend):
        raise ZhembedError(f"training needs the torch backend, not {encoder.backend.name}; load the model with "
                           "backend='torch'")
    return encoder.backend.model.train()


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """runtime.pooling.pool in torch, so a model trains as it serves (mean, cls, max, lasttoken), in fp32
    whatever the hidden states' precision."""
    import torch

    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, -torch.inf).max(1).values
    if mode == "lasttoken":
        return hidden[torch.arange(len(hidden)), mask.sum(1) - 1]
    if mode != "mean":
        raise ZhembedError(f"pooling {mode!r} is not one this trainer knows (mean, cls, max, lasttoken)")
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): only there is bf16 autocast faster."""
    from ..eval.speed import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def autocast(precision: str) -> torch.autocast:
    """The forward pass's precision: bf16 autocast (weights, optimizer and losses stay fp32) for "bf16", and
    for "auto" on a CPU with native bf16; fp32 otherwise."""
    import torch

    if precision not in PRECISIONS:
        raise ZhembedError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    use = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use)


def pooled(model: torch.nn.Module, encoder: Encoder, ids: list[list[int]], precision: str = "fp32",
           group: int = 0) -> torch.Tensor:
    """fp32 embeddings of token-id lists, pooled as the model directory says, in their order. With `group` > 0 the texts run through
    the model in length-sorted groups of that many, each padded only to its own longest text (less padding
    for the same result)."""
    import torch

    order = np.argsort([len(x) for x in ids], kind="stable") if group else np.arange(len(ids))
    size = group or len(ids)
    parts = []
    with autocast(precision):
        for lo in range(0, len(ids), size):
            input_ids, mask = (torch.from_numpy(a) for a in encoder.pad([ids[i] for i in order[lo:lo + size]]))
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            parts.append(pool(hidden, mask, encoder.config.pooling))
    out = torch.cat(parts)
    return out[torch.from_numpy(np.argsort(order))] if group else out


class Batches:
    """Token ids for sentence batches: the student's tokenizer, prompt and padding."""

    def __init__(self, encoder: Encoder, sentences: list[str], max_length: int) -> None:
        self.encoder, self.ids = encoder, encoder.tokenize(sentences, max_length)

    def embed(self, model: torch.nn.Module, rows: np.ndarray | list[int], precision: str = "fp32",
              group: int = 0) -> torch.Tensor:
        return pooled(model, self.encoder, [self.ids[i] for i in rows], precision, group)


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   clip: float | None = 1.0) -> None:
    """Backward, clip the gradient norm to `clip` (None: no clipping), and step at learning rate `lr`."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


def lr_at(step: int, total: int, cfg: TrainSettings) -> float:
    """Linear warm-up, then linear decay to zero."""
    warm = max(1, int(cfg.warmup * total))
    return cfg.lr * (step + 1) / warm if step < warm else cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def dev_spearman(encoder: Encoder, data: Path) -> str:
    """Spearman x 100 on the first 2,000 pairs of csts_dev and lcqmc_dev, as one log line."""
    from ..eval.suite import PairTask, evaluate_encoder

    tasks = [PairTask.load(data / f"{name}.tsv", name) for name in ("csts_dev", "lcqmc_dev") if (data / f"{name}.tsv").exists()]
    for t in tasks:  # a fixed 2000-pair slice keeps the periodic check short
        t.first, t.second, t.labels = t.first[:2000], t.second[:2000], t.labels[:2000]
    scores = evaluate_encoder(encoder, tasks, batch_size=64, show_progress=False)
    return " ".join(f"{name} {s['cosine']:.2f}" for name, s in scores.items())


def start_run(cfg: TrainSettings, resume: bool) -> tuple[Path, Path, Path]:
    """Seed torch, set its threads, and check the output folder and the checkpoint before any work; returns
    (work dir, output dir, checkpoint file)."""
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work, out = Path(cfg.work_dir), Path(cfg.out)
    check_out_dir(out)
    return work, out, refuse_to_overwrite(work / "checkpoint.pt", resume)


def refuse_to_overwrite(ckpt_file: Path, resume: bool) -> Path:
    """A run never silently restarts over another run's checkpoint."""
    if ckpt_file.exists() and not resume:
        raise ZhembedError(f"{ckpt_file} exists: pass --resume to continue it, or choose another --work-dir")
    return ckpt_file


# Settings that may change between a run and its resume: they do not change what is trained.
RESUMABLE_CHANGES = {"checkpoint_every", "log_every", "eval_every", "eval_data", "threads"}


def resume_point(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, config: dict, resume: bool,
                 fresh_best: float, total: int, log: Log) -> tuple[int, float]:
    """(step, best) to start from: the checkpoint's when asked to resume and one exists (model and optimizer
    restored), else (0, fresh_best)."""
    if not (resume and path.exists()):
        return 0, fresh_best
    ckpt = load_checkpoint(path, model, opt, config)
    log(f"resumed at step {ckpt['step']}/{total}")
    return ckpt["step"], ckpt["best"]


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, config: dict) -> dict:
    """Restore model, optimizer and RNG state; returns the checkpoint (step, best). Refuses a checkpoint
    written with other settings, and never runs code from the file (weights_only)."""
    import torch

    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as e:
        raise ZhembedError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    saved = ckpt.get("config", {})
    changed = sorted(k for k in set(saved) | set(config)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ZhembedError(f"{path} was written with other settings ({detail}); resume with the same "
                           "settings, or start a new run in another --work-dir")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, best: float,
                    config: dict) -> None:
    """Atomic and durable: a kill or power loss during the write leaves the previous checkpoint intact."""
    import torch

    write_atomic(path, lambda f: torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                             "best": best, "torch_rng": torch.get_rng_state(), "config": config}, f))
