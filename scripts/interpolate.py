"""Weight-space interpolation of two fine-tunes of one model (WiSE-FT): (1 - alpha) * A + alpha * B, tensor by
tensor. A fine-tune that gained on some tasks and lost on others often keeps most of both when averaged with
the model it started from; validation then picks alpha.

    python scripts/interpolate.py zhembed/models/zhembed-small-zh runs/build/ft-c --alpha 0.5 --out runs/build/ft-c-avg50

Both directories must hold the same architecture. Their vocabularies may differ when both were pruned from one
parent (two students of the same teacher): B's word-embedding rows are then matched to A's by piece, and A's
pieces that B lacks keep A's rows. The output is A's directory (tokenizer, configs, pooling, Matryoshka sizes)
with the averaged weights, no ONNX export, and a zhembed_run.json that names the two models and alpha.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from zhembed.modeldir import (WEIGHTS_FILE, copy_model_files, read_tokenizer_json, resolve_model_dir, save_weights,
                              write_json)
from zhembed.train.common import RUN_MARKER

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def pieces(model_dir: Path) -> list[str] | None:
    """The pieces of a Unigram tokenizer.json in id order (None for any other tokenizer)."""
    vocab = read_tokenizer_json(model_dir).get("model", {}).get("vocab")
    return [piece for piece, _ in vocab] if isinstance(vocab, list) else None


def aligned_rows(a_pieces: list[str], b_pieces: list[str], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """B's word-embedding rows in A's vocabulary order; A's own row where B lacks the piece."""
    index = {piece: row for row, piece in enumerate(b_pieces)}
    missing = set(index) - set(a_pieces)
    if missing:
        raise SystemExit(f"B has {len(missing)} pieces that A lacks (e.g. {sorted(missing)[:3]}); "
                         "give the model with the larger vocabulary as A")
    return np.stack([second[index[p]] if p in index else first[row] for row, p in enumerate(a_pieces)])


def interpolate(a: Path, b: Path, alpha: float, out: Path) -> None:
    first, second = load_file(str(a / WEIGHTS_FILE)), load_file(str(b / WEIGHTS_FILE))
    a_pieces, b_pieces = pieces(a), pieces(b)
    if a_pieces and b_pieces and a_pieces != b_pieces and WORD_EMBEDDINGS in first and WORD_EMBEDDINGS in second:
        second[WORD_EMBEDDINGS] = aligned_rows(a_pieces, b_pieces, first[WORD_EMBEDDINGS], second[WORD_EMBEDDINGS])
    if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
        raise SystemExit(f"{a} and {b} do not hold the same tensors; interpolate two fine-tunes of one model")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copy_model_files(a, tmp)
    mixed = {k: (1 - alpha) * first[k].astype("float32") + alpha * second[k].astype("float32") for k in first}
    save_weights(tmp, {k: v.astype(first[k].dtype) for k, v in mixed.items()})  # averaged in fp32
    # its own record, not A's: A's validation score would otherwise pass for the average's
    write_json(tmp / RUN_MARKER, {"interpolated": {"a": str(a), "b": str(b), "alpha": alpha}})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--alpha", type=float, default=0.5, help="the weight of B")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    interpolate(resolve_model_dir(args.a), resolve_model_dir(args.b), args.alpha, args.out)
    print(f"{args.out}: {1 - args.alpha:g} x {args.a} + {args.alpha:g} x {args.b}")


if __name__ == "__main__":
    main()
