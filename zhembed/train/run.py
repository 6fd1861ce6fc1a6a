"""The skeleton every training loop shares: one `Run` holds the model, optimizer, step, best and total, resumes
from its checkpoint, steps the schedule and says when logging, evaluation and checkpoints are due. A recipe
(distill.py, finetune.py, static.py) keeps only its data, its loss and its evaluation, and reads top to bottom:

    run = Run.start(cfg, model, total, ckpt_file, resume, fresh_best, log)
    while not run.done:
        run.update(loss_of(batch_at(run.step)))
        if run.due(cfg.eval_every):
            run.best = evaluate(...)
        run.checkpoint_if_due()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import Log
from .common import TrainSettings, lr_at, optimizer_step, resume_point, save_checkpoint

if TYPE_CHECKING:
    import torch


@dataclass
class Run:
    cfg: TrainSettings           # the recipe's config dataclass (lr, warmup, checkpoint_every, ...)
    model: torch.nn.Module       # the module being trained
    opt: torch.optim.Optimizer
    total: int                   # steps in the whole run
    ckpt_file: Path
    step: int = 0
    best: float = 0.0
    started: float = field(default_factory=time.time)
    start_step: int = 0
    schedule: Callable[[int], float] | None = None  # a step's learning rate (default: warm-up, then linear decay)
    clip: float | None = 1.0     # the gradient norm's ceiling (None: no clipping)

    @classmethod
    def start(cls, cfg: TrainSettings, model: torch.nn.Module, total: int, ckpt_file: Path, resume: bool,
              fresh_best: float, log: Log, opt: torch.optim.Optimizer | None = None) -> Run:
        """The run, resumed from the checkpoint when asked and one exists. The optimizer defaults to AdamW
        (weight decay 0.01) over the model, with the fused kernel: the same update in one pass over each tensor
        (3-6x faster on a CPU than the op-by-op default; checkpoints of either load into the other). A recipe with
        its own schedule or clipping sets them with dataclasses.replace."""
        import torch

        opt = opt or torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, fused=True)
        step, best = resume_point(ckpt_file, model, opt, asdict(cfg), resume, fresh_best, total, log)
        return cls(cfg, model, opt, total, ckpt_file, step, best, start_step=step)

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def lr(self) -> float:
        """The learning rate of the step just taken (or of the first one)."""
        return self.lr_of(max(self.step - 1, 0))

    def lr_of(self, step: int) -> float:
        return self.schedule(step) if self.schedule else lr_at(step, self.total, self.cfg)

    def update(self, loss: torch.Tensor) -> None:
        """Backward and one optimizer step at the schedule's learning rate."""
        optimizer_step(self.model, self.opt, loss, self.lr_of(self.step), self.clip)
        self.step += 1

    def due(self, every: int) -> bool:
        """Whether something done every `every` steps is due now (always at the last step)."""
        return self.step % every == 0 or self.step == self.total

    def steps_per_second(self) -> float:
        return (self.step - self.start_step) / max(time.time() - self.started, 1e-9)

    def minutes_left(self) -> float:
        return (self.total - self.step) / max(self.steps_per_second(), 1e-9) / 60

    def checkpoint_if_due(self) -> None:
        if self.due(self.cfg.checkpoint_every):
            save_checkpoint(self.ckpt_file, self.model, self.opt, self.step, self.best, asdict(self.cfg))
