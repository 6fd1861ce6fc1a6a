"""Evaluation commands: eval (the [eval] extra) and bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from .common import BatchOpt, MaxLenOpt, app, load_encoder

AccuracyBackendOpt = Annotated[str, typer.Option(help="torch (the exact fp32 weights; the [train] extra), onnx "
                                                      "(the int8 export when there is one) or auto.")]


def _task_pairs(specs: list[str]) -> dict[str, Path]:
    pairs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ZhembedError(f"--task takes name=path.tsv, got {spec!r}")
        pairs[name] = Path(path)
    return pairs


def _sizes(spec: str | None) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()] if spec else []
    except ValueError:
        raise ZhembedError(f"--dimensions takes comma-separated integers, got {spec!r}") from None


@app.command("eval")
def eval_cmd(models: Annotated[list[str], typer.Argument(help="Model directories (the first is the baseline).")],
             data: Annotated[Optional[Path], typer.Option(help="Folder of TSV splits (default: ../shared/data/eval).")] = None,
             tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task names (default: the seven seed splits).")] = None,
             task: Annotated[Optional[list[str]], typer.Option(help="Extra task as name=path.tsv (repeatable).")] = None,
             json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
             markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Write the Markdown tables here.")] = None,
             plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG bar chart here.")] = None,
             batch_size: BatchOpt = 32, max_length: MaxLenOpt = 256, backend: AccuracyBackendOpt = "torch",
             dimensions: Annotated[Optional[str], typer.Option(
                 help="Comma-separated vector sizes, e.g. 384,256,128,64,32: one row per size (a prefix, normalized).")] = None) -> None:
    """Spearman x 100 on Chinese STS/matching splits, in both protocols (seed and cosine)."""
    import time

    from ..eval import suite as ev

    require("eval", "zhembed eval")

    task_list = ev.load_tasks(data, [t for t in (tasks or "").split(",") if t] or None, _task_pairs(task or []))
    sizes = _sizes(dimensions)
    results = []
    for model in models:
        start = time.time()
        encoder = load_encoder(model, backend)
        by_size = ev.evaluate_dimensions(encoder, task_list, sizes or [encoder.dim], batch_size, max_length)
        for size, scores in by_size.items():
            results.append(ev.summarize(f"{model} @{size}" if sizes else model, scores, time.time() - start))
            typer.echo(f"{results[-1]['model']}: cosine {results[-1]['avg']['cosine']:.2f}, "
                       f"seed {results[-1]['avg']['seed']:.2f} ({results[-1]['seconds']:.0f} s)", err=True)
    typer.echo(ev.write_outputs(ev.report(results), json_path, markdown_path, plot_path))


@app.command()
def bench(models: Annotated[list[str], typer.Argument(help="Model directories (the first is the baseline).")],
          sentences: Annotated[int, typer.Option(help="Sentences drawn from the evaluation splits.")] = 10_000,
          data: Annotated[Optional[Path], typer.Option(help="Folder of TSV splits (default: ../shared/data/eval).")] = None,
          batch_size: BatchOpt = 16, max_length: MaxLenOpt = 256,
          repeats: Annotated[int, typer.Option(help="Timed passes per model; the median is reported.")] = 3,
          json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
          markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Write the Markdown table here.")] = None,
          backend: AccuracyBackendOpt = "torch") -> None:
    """The seed card's speed table: cost, latency and throughput, with a ratio against the first model."""
    from ..eval import speed as bm

    texts = bm.bench_sentences(sentences, data)
    doc = bm.run_bench([load_encoder(m, backend) for m in models], texts, batch_size, max_length, repeats,
                       log=lambda msg: typer.echo(msg, err=True))
    table = bm.markdown(doc)
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if markdown_path:
        markdown_path.write_text(table, encoding="utf-8")
    typer.echo(table)
