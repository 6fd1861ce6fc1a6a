"""Pieces every training loop shares: token batches, mean pooling in torch, the optimizer step and schedule,
checkpoints, saving a trained model as a model directory, and the periodic dev check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ZhembedError
from ..modeldir import WEIGHTS_FILE, copy_model_files, read_model_config, write_json


def save_model(model, src_dir: Path, out: Path, fp16: bool = True) -> None:
    """Write a trained BertModel as a sentence-transformers directory (fp16 weights, fp32 compute)."""
    import torch
    from safetensors.torch import save_file

    tmp = out.with_name(out.name + ".tmp")
    copy_model_files(src_dir, tmp)
    state = {k: v.detach().to(torch.float16 if fp16 else torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    config = read_model_config(tmp)
    config["dtype"] = "float32"  # so AutoModel (dtype="auto") computes in fp32 on the CPU
    write_json(tmp / "config.json", config)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class Batches:
    """Token ids for sentence batches: the student's tokenizer, prompt and padding."""

    def __init__(self, encoder, sentences: list[str], max_length: int):
        self.encoder, self.ids = encoder, encoder.tokenize(sentences, max_length)

    def tensors(self, rows):
        import torch

        input_ids, mask = self.encoder.pad([self.ids[i] for i in rows])
        return torch.from_numpy(input_ids), torch.from_numpy(mask)


def optimizer_step(model, opt, loss, lr: float) -> None:
    """Backward, clip the gradient norm to 1, and step at learning rate `lr`."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def lr_at(step: int, total: int, cfg) -> float:
    """Linear warm-up, then linear decay to zero."""
    warm = max(1, int(cfg.warmup * total))
    return cfg.lr * (step + 1) / warm if step < warm else cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def dev_spearman(encoder, data: Path) -> str:
    from ..eval.suite import PairTask, evaluate_encoder

    tasks = [PairTask.load(data / f"{name}.tsv", name) for name in ("csts_dev", "lcqmc_dev") if (data / f"{name}.tsv").exists()]
    for t in tasks:  # a fixed 2000-pair slice keeps the periodic check short
        t.first, t.second, t.labels = t.first[:2000], t.second[:2000], t.labels[:2000]
    scores = evaluate_encoder(encoder, tasks, batch_size=64, show_progress=False)
    return " ".join(f"{name} {s['cosine']:.2f}" for name, s in scores.items())


def refuse_to_overwrite(ckpt_file: Path, resume: bool) -> Path:
    """A run never silently restarts over another run's checkpoint."""
    if ckpt_file.exists() and not resume:
        raise ZhembedError(f"{ckpt_file} exists: pass --resume to continue it, or choose another --work-dir")
    return ckpt_file


def load_checkpoint(path: Path, model, opt) -> dict:
    """Restore model, optimizer and RNG state; returns the checkpoint (step, best)."""
    import torch

    ckpt = torch.load(path, weights_only=False)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt


def save_checkpoint(path: Path, model, opt, step: int, best: float) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)
