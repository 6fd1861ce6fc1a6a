"""Training commands: distill, finetune, mine-negatives, calibrate, distill-static (the [train] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from ..modeldir import resolve_model_dir
from .common import BatchOpt, MaxLenOpt, app

ThreadsOpt = Annotated[int, typer.Option(help="CPU threads for training and the teacher (0: all cores).")]
PrecisionOpt = Annotated[str, typer.Option(help="Forward pass: bf16 autocast, fp32, or auto (bf16 where the CPU has AVX512-BF16/AMX).")]


@app.command()
def distill(teacher: Annotated[Optional[str], typer.Option(help="Teacher directory (default: the imported e5).")] = None,
            out: Annotated[Path, typer.Option(help="Where to write the student.")] = Path("runs/student"),
            corpus: Annotated[Optional[str], typer.Option(help="Unlabeled sentences, one per line (several files: a,b).")] = None,
            layers: Annotated[str, typer.Option(help="'auto' or 0-based teacher layers, e.g. 1,4,7,10.")] = "auto",
            num_layers: Annotated[int, typer.Option(help="Student layers with --layers auto.")] = 4,
            prune_vocab: Annotated[bool, typer.Option(help="Prune the vocabulary to the corpus first.")] = True,
            epochs: int = 1, batch_size: BatchOpt = 64, lr: float = 2e-4, max_length: MaxLenOpt = 256,
            cos_weight: Annotated[float, typer.Option(help="Weight of an extra (1 - cosine) loss term.")] = 0.0,
            max_sentences: Annotated[int, typer.Option(help="Use the first N sentences of the seeded shuffle (0: all).")] = 0,
            seed: int = 42,
            work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (git-ignored).")] = Path("runs/distill"),
            eval_data: Annotated[Optional[Path], typer.Option(help="Folder with csts_dev/lcqmc_dev for dev checks.")] = None,
            checkpoint_every: int = 200, eval_every: int = 500, threads: ThreadsOpt = 0, precision: PrecisionOpt = "auto",
            resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False):
    """Distil a small student from a teacher (MSE on sentence embeddings), with checkpoints and resume."""
    require("train", "zhembed distill")
    from ..make.import_e5 import teacher_dir
    from ..train.distill import DistillConfig
    from ..train.distill import distill as run

    if corpus is None:
        raise ZhembedError("--corpus FILE is required (unlabeled sentences, one per line)")
    cfg = DistillConfig(teacher=str(resolve_model_dir(teacher) if teacher else teacher_dir()), out=str(out),
                        corpus=str(corpus), layers=layers, num_layers=num_layers, prune_vocab=prune_vocab,
                        epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, cos_weight=cos_weight,
                        max_sentences=max_sentences, seed=seed, work_dir=str(work_dir),
                        eval_data=str(eval_data or ""), checkpoint_every=checkpoint_every, eval_every=eval_every,
                        threads=threads, precision=precision)
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def finetune(model: Annotated[str, typer.Option(help="The model to fine-tune (e.g. a distilled student).")],
             train: Annotated[str, typer.Option(help="Comma-separated TSV files: sentence1, sentence2, label.")],
             out: Annotated[Path, typer.Option(help="Where to write the fine-tuned model.")],
             eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation splits: the contamination guard (they are never scored during training).")] = None,
             allow_overlap: Annotated[bool, typer.Option("--allow-overlap", help="Train on pairs that share a sentence with an evaluation split.")] = False,
             teacher: Annotated[Optional[str], typer.Option(help="Teacher for the distillation regulariser.")] = None,
             distill_weight: Annotated[float, typer.Option(help="Weight of the MSE towards the teacher on --distill-corpus (0: off).")] = 0.0,
             distill_corpus: Annotated[Optional[str], typer.Option(help="Unlabeled sentences for that MSE (files a,b).")] = None,
             distill_batch: Annotated[int, typer.Option(help="Corpus sentences per step for that MSE.")] = 32,
             distill_max_sentences: Annotated[int, typer.Option(help="Use only the first N sentences of the corpus's seeded shuffle for that MSE (0: all).")] = 0,
             cache_dir: Annotated[Optional[Path], typer.Option(help="Teacher-embedding cache (a distill run's work-dir/cache is reused).")] = None,
             val_fraction: Annotated[float, typer.Option(help="Share of each training file held out to pick the checkpoint (0: keep the last).")] = 0.0,
             matryoshka: Annotated[Optional[str], typer.Option(help="Vector sizes to train, e.g. 384,256,128,64,32 (the losses on each prefix).")] = None,
             word_order_negatives: Annotated[int, typer.Option(help="Synthetic pairs with two spans swapped (label 0) beside their paraphrase.")] = 0,
             hard_negatives: Annotated[Optional[Path], typer.Option(help="Triples from `zhembed mine-negatives`, for the ranking loss.")] = None,
             epochs: float = 1.0, batch_size: BatchOpt = 32, lr: float = 5e-5, max_length: MaxLenOpt = 64, seed: int = 42,
             work_dir: Annotated[Path, typer.Option(help="Checkpoints (git-ignored).")] = Path("runs/finetune"),
             checkpoint_every: int = 200, eval_every: int = 500, threads: ThreadsOpt = 0, precision: PrecisionOpt = "auto",
             group_size: Annotated[int, typer.Option(help="Texts per forward pass, length-sorted (0: a step's texts at once).")] = 32,
             resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False):
    """Fine-tune on labelled pairs: CoSENT for scores and labels, in-batch ranking for NLI triples."""
    require("train", "zhembed finetune")
    from ..train.finetune import FinetuneConfig
    from ..train.finetune import finetune as run

    cfg = FinetuneConfig(model=str(model), train=[t for t in train.split(",") if t], out=str(out),
                         eval_data=str(eval_data or ""), allow_overlap=allow_overlap, teacher=teacher or "",
                         distill_weight=distill_weight, distill_corpus=distill_corpus or "", distill_batch=distill_batch,
                         distill_max_sentences=distill_max_sentences, cache_dir=str(cache_dir or ""), val_fraction=val_fraction, matryoshka=matryoshka or "",
                         word_order_negatives=word_order_negatives, hard_negatives=str(hard_negatives or ""), epochs=epochs, batch_size=batch_size, lr=lr,
                         max_length=max_length, seed=seed, work_dir=str(work_dir),
                         checkpoint_every=checkpoint_every, eval_every=eval_every, threads=threads,
                         precision=precision, group_size=group_size)
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command("mine-negatives")
def mine_negatives(model: Annotated[str, typer.Option(help="The student that ranks the corpus.")],
                   train: Annotated[str, typer.Option(help="Comma-separated fine-tuning TSVs: their positive pairs get a negative.")],
                   corpus: Annotated[str, typer.Option(help="Unlabeled sentences, one per line (several files: a,b).")],
                   out: Annotated[Path, typer.Option(help="TSV to write: anchor, positive, negative.")],
                   teacher: Annotated[Optional[str], typer.Option(help="Teacher that vetoes near-duplicates (default: the imported e5).")] = None,
                   cache_dir: Annotated[Optional[Path], typer.Option(help="Teacher-embedding cache (a distill run's work-dir/cache is reused).")] = None,
                   val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction: that share of each file is not mined.")] = 0.0,
                   seed: Annotated[int, typer.Option(help="As finetune's --seed.")] = 42,
                   rank_min: int = 10, rank_max: int = 100, max_length: MaxLenOpt = 64, threads: ThreadsOpt = 0):
    """Mine hard negatives for the ranking loss: corpus sentences the student ranks 10-100 for each anchor,
    unless the teacher scores them as close to the positive as the anchor is."""
    require("train", "zhembed mine-negatives")
    from ..make.import_e5 import teacher_dir
    from ..train.negatives import MineConfig, mine

    cfg = MineConfig(model=str(resolve_model_dir(model)), train=[t for t in train.split(",") if t], corpus=corpus,
                     teacher=str(resolve_model_dir(teacher) if teacher else teacher_dir()), out=str(out),
                     cache_dir=str(cache_dir or ""), val_fraction=val_fraction, seed=seed, rank_min=rank_min,
                     rank_max=rank_max, max_length=max_length, threads=threads)
    mine(cfg, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def calibrate(model: Annotated[str, typer.Option(help="The model directory to calibrate (calibration.json is written into it).")],
              train: Annotated[str, typer.Option(help="Comma-separated fine-tuning TSVs: their held-out 0/1 pairs are fitted.")],
              val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction.")] = 0.03,
              seed: Annotated[int, typer.Option(help="As finetune's --seed.")] = 42, max_length: MaxLenOpt = 256):
    """Fit a monotone map from cosine to match probability on the validation pairs (isotonic regression)."""
    require("train", "zhembed calibrate")
    from ..train.calibrate import CalibrateConfig
    from ..train.calibrate import calibrate as run

    run(CalibrateConfig(model=str(resolve_model_dir(model)), train=[t for t in train.split(",") if t],
                        val_fraction=val_fraction, seed=seed, max_length=max_length),
        log=lambda msg: typer.echo(msg, err=True))


@app.command("distill-static")
def distill_static(out: Annotated[Path, typer.Option(help="Where to write the static model directory.")],
                   corpus: Annotated[str, typer.Option(help="Unlabeled sentences (files a,b): piece frequencies and regression targets.")],
                   model: Annotated[Optional[str], typer.Option(help="The transformer to distil (default: the shipped model).")] = None,
                   train: Annotated[str, typer.Option(help="Comma-separated labelled TSVs for the contrastive step (empty: regression only).")] = "",
                   eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation splits: the contamination guard.")] = None,
                   val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction: held out to pick the table.")] = 0.03,
                   max_sentences: Annotated[int, typer.Option(help="Corpus sentences to regress on (0: all).")] = 0,
                   pca_dims: Annotated[int, typer.Option(help="Dimensions of the table.")] = 256,
                   sif: Annotated[float, typer.Option(help="SIF weighting a / (a + p) of the pieces' frequencies p.")] = 1e-4,
                   regression_epochs: float = 2.0, pair_epochs: float = 6.0, batch_size: BatchOpt = 256,
                   lr: Annotated[float, typer.Option(help="Peak learning rate of the regression.")] = 2e-3,
                   pair_lr: Annotated[float, typer.Option(help="Peak learning rate of the contrastive step.")] = 5e-4,
                   regression_weight: Annotated[float, typer.Option(help="Weight of the regression loss beside the pairs.")] = 10.0,
                   seed: int = 42,
                   work_dir: Annotated[Path, typer.Option(help="Checkpoints and the vector cache (git-ignored).")] = Path("runs/distill-static"),
                   cache_dir: Annotated[Optional[Path], typer.Option(help="Transformer-vector cache (default WORK_DIR/cache).")] = None,
                   threads: ThreadsOpt = 0,
                   resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False):
    """Distil a static model (mean of token vectors, numpy-only runtime) from a transformer, then train it:
    regression onto the transformer's vectors, then contrastive on labelled pairs."""
    require("train", "zhembed distill-static")
    from ..runtime import model_dir
    from ..train.static import StaticConfig
    from ..train.static import distill_static as run

    cfg = StaticConfig(model=str(model_dir(model)), out=str(out), corpus=corpus,
                       train=[t for t in train.split(",") if t], eval_data=str(eval_data or ""),
                       val_fraction=val_fraction, max_sentences=max_sentences, pca_dims=pca_dims, sif=sif,
                       regression_epochs=regression_epochs, pair_epochs=pair_epochs, batch_size=batch_size, lr=lr,
                       pair_lr=pair_lr, regression_weight=regression_weight,
                       seed=seed, work_dir=str(work_dir), cache_dir=str(cache_dir or ""), threads=threads)
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))
