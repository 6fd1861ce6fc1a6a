"""Training commands: distill, finetune, mine-negatives, calibrate, distill-static (the [train] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from ..modeldir import resolve_model_dir
from ..train.calibrate import CalibrateConfig
from ..train.distill import DistillConfig
from ..train.finetune import FinetuneConfig
from ..train.negatives import MineConfig
from ..train.static import StaticConfig
from .common import BatchOpt, MaxLenOpt, app, config_from, defaults

# Every default is written once, in the recipe's config dataclass; the options below read it from there.
D, F, M, C, S = map(defaults, (DistillConfig, FinetuneConfig, MineConfig, CalibrateConfig, StaticConfig))

ThreadsOpt = Annotated[int, typer.Option(help="CPU threads for training and the teacher (0: all cores).")]
PrecisionOpt = Annotated[str, typer.Option(help="Forward pass: bf16 autocast, fp32, or auto (bf16 where the CPU has AVX512-BF16/AMX).")]


@app.command()
def distill(teacher: Annotated[Optional[str], typer.Option(help="Teacher directory (default: the imported e5).")] = None,
            out: Annotated[Path, typer.Option(help="Where to write the student.")] = Path("runs/student"),
            corpus: Annotated[Optional[str], typer.Option(help="Unlabeled sentences, one per line (several files: a,b).")] = None,
            layers: Annotated[str, typer.Option(help="'auto' or 0-based teacher layers, e.g. 1,4,7,10.")] = D.layers,
            num_layers: Annotated[int, typer.Option(help="Student layers with --layers auto.")] = D.num_layers,
            prune_vocab: Annotated[bool, typer.Option(help="Prune the vocabulary to the corpus first.")] = D.prune_vocab,
            epochs: int = D.epochs, batch_size: BatchOpt = D.batch_size, lr: float = D.lr, max_length: MaxLenOpt = D.max_length,
            cos_weight: Annotated[float, typer.Option(help="Weight of an extra (1 - cosine) loss term.")] = D.cos_weight,
            max_sentences: Annotated[int, typer.Option(help="Use the first N sentences of the seeded shuffle (0: all).")] = D.max_sentences,
            seed: int = D.seed,
            work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (git-ignored).")] = Path(D.work_dir),
            eval_data: Annotated[Optional[Path], typer.Option(help="Folder with csts_dev/lcqmc_dev for dev checks.")] = None,
            checkpoint_every: int = D.checkpoint_every, eval_every: int = D.eval_every, threads: ThreadsOpt = D.threads, precision: PrecisionOpt = D.precision,
            resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False) -> None:
    """Distil a small student from a teacher (MSE on sentence embeddings), with checkpoints and resume."""
    require("train", "zhembed distill")
    from ..make.import_e5 import teacher_dir
    from ..train.distill import distill as run

    if corpus is None:
        raise ZhembedError("--corpus FILE is required (unlabeled sentences, one per line)")
    cfg = config_from(DistillConfig, locals(), teacher=str(resolve_model_dir(teacher) if teacher else teacher_dir()))
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def finetune(model: Annotated[str, typer.Option(help="The model to fine-tune (e.g. a distilled student).")],
             train: Annotated[str, typer.Option(help="Comma-separated TSV files: sentence1, sentence2, label.")],
             out: Annotated[Path, typer.Option(help="Where to write the fine-tuned model.")],
             eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation splits: the contamination guard (they are never scored during training).")] = None,
             allow_overlap: Annotated[bool, typer.Option("--allow-overlap", help="Train on pairs that share a sentence with an evaluation split.")] = F.allow_overlap,
             teacher: Annotated[Optional[str], typer.Option(help="Teacher for the distillation regulariser.")] = None,
             distill_weight: Annotated[float, typer.Option(help="Weight of the MSE towards the teacher on --distill-corpus (0: off).")] = F.distill_weight,
             distill_corpus: Annotated[Optional[str], typer.Option(help="Unlabeled sentences for that MSE (files a,b).")] = None,
             distill_batch: Annotated[int, typer.Option(help="Corpus sentences per step for that MSE.")] = F.distill_batch,
             distill_max_sentences: Annotated[int, typer.Option(help="Use only the first N sentences of the corpus's seeded shuffle for that MSE (0: all).")] = F.distill_max_sentences,
             cache_dir: Annotated[Optional[Path], typer.Option(help="Teacher-embedding cache (a distill run's work-dir/cache is reused).")] = None,
             val_fraction: Annotated[float, typer.Option(help="Share of each training file held out to pick the checkpoint (0: keep the last).")] = F.val_fraction,
             matryoshka: Annotated[Optional[str], typer.Option(help="Vector sizes to train, e.g. 384,256,128,64,32 (the losses on each prefix).")] = None,
             word_order_negatives: Annotated[int, typer.Option(help="Synthetic pairs with two spans swapped (label 0) beside their paraphrase.")] = F.word_order_negatives,
             hard_negatives: Annotated[Optional[Path], typer.Option(help="Triples from `zhembed mine-negatives`, for the ranking loss.")] = None,
             epochs: float = F.epochs, batch_size: BatchOpt = F.batch_size, lr: float = F.lr, max_length: MaxLenOpt = F.max_length, seed: int = F.seed,
             work_dir: Annotated[Path, typer.Option(help="Checkpoints (git-ignored).")] = Path(F.work_dir),
             checkpoint_every: int = F.checkpoint_every, eval_every: int = F.eval_every, threads: ThreadsOpt = F.threads, precision: PrecisionOpt = F.precision,
             group_size: Annotated[int, typer.Option(help="Texts per forward pass, length-sorted (0: a step's texts at once).")] = F.group_size,
             size_exponent: Annotated[float, typer.Option(help="Draw a step's file with probability ∝ rows**this (1: by size; 0.5: small files more often; 0: evenly).")] = F.size_exponent,
             data_offset: Annotated[int, typer.Option(help="Start the batch stream at this step, so a run from an earlier run's weights sees the batches after it.")] = F.data_offset,
             resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False) -> None:
    """Fine-tune on labelled pairs: CoSENT for scores and labels, in-batch ranking for NLI triples."""
    require("train", "zhembed finetune")
    from ..train.finetune import finetune as run

    cfg = config_from(FinetuneConfig, locals(), train=[t for t in train.split(",") if t])
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command("mine-negatives")
def mine_negatives(model: Annotated[str, typer.Option(help="The student that ranks the corpus.")],
                   train: Annotated[str, typer.Option(help="Comma-separated fine-tuning TSVs: their positive pairs get a negative.")],
                   corpus: Annotated[str, typer.Option(help="Unlabeled sentences, one per line (several files: a,b).")],
                   out: Annotated[Path, typer.Option(help="TSV to write: anchor, positive, negative.")],
                   teacher: Annotated[Optional[str], typer.Option(help="Teacher that vetoes near-duplicates (default: the imported e5).")] = None,
                   cache_dir: Annotated[Optional[Path], typer.Option(help="Teacher-embedding cache (a distill run's work-dir/cache is reused).")] = None,
                   val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction: that share of each file is not mined.")] = M.val_fraction,
                   seed: Annotated[int, typer.Option(help="As finetune's --seed.")] = M.seed,
                   rank_min: int = M.rank_min, rank_max: int = M.rank_max, max_length: MaxLenOpt = M.max_length, threads: ThreadsOpt = M.threads) -> None:
    """Mine hard negatives for the ranking loss: corpus sentences the student ranks 10-100 for each anchor,
    unless the teacher scores them as close to the positive as the anchor is."""
    require("train", "zhembed mine-negatives")
    from ..make.import_e5 import teacher_dir
    from ..train.negatives import mine

    cfg = config_from(MineConfig, locals(), model=str(resolve_model_dir(model)), train=[t for t in train.split(",") if t],
                     teacher=str(resolve_model_dir(teacher) if teacher else teacher_dir()))
    mine(cfg, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def calibrate(model: Annotated[str, typer.Option(help="The model directory to calibrate (calibration.json is written into it).")],
              train: Annotated[str, typer.Option(help="Comma-separated fine-tuning TSVs: their held-out 0/1 pairs are fitted.")],
              val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction.")] = C.val_fraction,
              seed: Annotated[int, typer.Option(help="As finetune's --seed.")] = C.seed, max_length: MaxLenOpt = C.max_length) -> None:
    """Fit a monotone map from cosine to match probability on the validation pairs (isotonic regression)."""
    require("train", "zhembed calibrate")
    from ..train.calibrate import calibrate as run

    run(config_from(CalibrateConfig, locals(), model=str(resolve_model_dir(model)), train=[t for t in train.split(",") if t]),
        log=lambda msg: typer.echo(msg, err=True))


@app.command("distill-static")
def distill_static(out: Annotated[Path, typer.Option(help="Where to write the static model directory.")],
                   corpus: Annotated[str, typer.Option(help="Unlabeled sentences (files a,b): piece frequencies and regression targets.")],
                   model: Annotated[Optional[str], typer.Option(help="The transformer to distil (default: the shipped model).")] = None,
                   train: Annotated[str, typer.Option(help="Comma-separated labelled TSVs for the contrastive step (empty: regression only).")] = "",
                   eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation splits: the contamination guard.")] = None,
                   val_fraction: Annotated[float, typer.Option(help="As finetune's --val-fraction: held out to pick the table.")] = S.val_fraction,
                   max_sentences: Annotated[int, typer.Option(help="Corpus sentences to regress on (0: all).")] = S.max_sentences,
                   pca_dims: Annotated[int, typer.Option(help="Dimensions of the table.")] = S.pca_dims,
                   sif: Annotated[float, typer.Option(help="SIF weighting a / (a + p) of the pieces' frequencies p.")] = S.sif,
                   regression_epochs: float = S.regression_epochs, pair_epochs: float = S.pair_epochs, batch_size: BatchOpt = S.batch_size,
                   lr: Annotated[float, typer.Option(help="Peak learning rate of the regression.")] = S.lr,
                   pair_lr: Annotated[float, typer.Option(help="Peak learning rate of the contrastive step.")] = S.pair_lr,
                   regression_weight: Annotated[float, typer.Option(help="Weight of the regression loss beside the pairs.")] = S.regression_weight,
                   seed: int = S.seed,
                   work_dir: Annotated[Path, typer.Option(help="Checkpoints and the vector cache (git-ignored).")] = Path(S.work_dir),
                   cache_dir: Annotated[Optional[Path], typer.Option(help="Transformer-vector cache (default WORK_DIR/cache).")] = None,
                   threads: ThreadsOpt = S.threads,
                   resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False) -> None:
    """Distil a static model (mean of token vectors, numpy-only runtime) from a transformer, then train it:
    regression onto the transformer's vectors, then contrastive on labelled pairs."""
    require("train", "zhembed distill-static")
    from ..runtime import model_dir
    from ..train.static import distill_static as run

    cfg = config_from(StaticConfig, locals(), model=str(model_dir(model)), train=[t for t in train.split(",") if t])
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))
