"""The model directory: the one interface every zhembed model speaks, and the one module that knows it.

A model directory is a sentence-transformers directory: a transformers model (config.json,
model.safetensors, tokenizer.json) plus modules.json, 1_Pooling/config.json, 2_Normalize/,
sentence_bert_config.json and config_sentence_transformers.json, so `SentenceTransformer(dir)` and
`AutoModel` load it as is. Its ONNX exports live in onnx/ (model.onnx, model_qint8.onnx), the layout
sentence-transformers' ONNX backend and fastembed read too.

A static model directory is the sentence-transformers layout of `StaticEmbedding` + `Normalize`: modules.json,
model.safetensors holding one table `embedding.weight` [vocabulary, dim], and tokenizer.json (no special tokens),
all at the root; a text's vector is the mean of its tokens' rows. Reading and writing this layout, copying a
directory, and facts about it (parameters, size) live here and nowhere else.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_text_atomic
from .errors import ZhembedError

if TYPE_CHECKING:  # numpy is imported where it is used: reading a directory's config needs none
    import numpy as np
    from tokenizers import Tokenizer

ONNX_DIR = "onnx"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.txt"  # a WordPiece directory without tokenizer.json (the seed's own models)
MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
WEIGHTS_FILE = "model.safetensors"
WEIGHT_FILES = (WEIGHTS_FILE, "pytorch_model.bin")
CALIBRATION_FILE = "calibration.json"  # the monotone map from cosine to match probability, if fitted
STATIC_MODULE = "sentence_transformers.models.StaticEmbedding"
STATIC_TENSOR = "embedding.weight"
DIMENSIONS_KEY = "matryoshka_dimensions"  # in config_sentence_transformers.json: the sizes a prefix serves

POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@dataclass
class SentenceConfig:
    """What zhembed needs from the sentence-transformers files of a directory."""

    pooling: str = "mean"
    normalize: bool = True
    prompt: str = ""
    max_seq_length: int = 256
    dim: int | None = None
    dimensions: list[int] | None = None  # Matryoshka sizes the model was trained for, largest first


def write_json(path: Path, obj: dict | list) -> None:
    """Pretty UTF-8 JSON, written atomically and durably."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_sentence_config(out: Path, dim: int, cfg: SentenceConfig, prompts: dict[str, str] | None = None) -> None:
    """Write the sentence-transformers module files beside a saved transformers model."""
    out = Path(out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(parents=True, exist_ok=True)
    write_json(out / "modules.json", modules)
    pooling = {key: cfg.pooling == mode for mode, key in POOLING_KEYS.items()}
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim, **pooling,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False, "include_prompt": True,
    })
    write_json(out / "sentence_bert_config.json", {"max_seq_length": cfg.max_seq_length, "do_lower_case": False})
    prompts = dict(prompts or ({"query": cfg.prompt} if cfg.prompt else {}))
    default = next((name for name, text in prompts.items() if text == cfg.prompt and cfg.prompt), None)
    write_json(out / "config_sentence_transformers.json", {
        "prompts": prompts, "default_prompt_name": default, "similarity_fn_name": "cosine",
    })


def read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZhembedError(f"cannot read {path}: {e}") from None


def read_sentence_config(model_dir: Path) -> SentenceConfig:
    """Read pooling, default prompt and max length; a plain BERT directory gets mean pooling."""
    model_dir = Path(model_dir)
    cfg = SentenceConfig()
    modules_file = model_dir / "modules.json"
    if modules_file.exists():
        for module in read_json(modules_file):
            if module.get("type", "").rsplit(".", 1)[-1] == "Pooling":
                pool = read_json(model_dir / module["path"] / "config.json")
                cfg.dim = pool.get("word_embedding_dimension")
                modes = [mode for mode, key in POOLING_KEYS.items() if pool.get(key)]
                cfg.pooling = modes[0] if modes else "mean"
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        cfg.max_seq_length = int(read_json(sbert).get("max_seq_length") or cfg.max_seq_length)
    st_file = model_dir / "config_sentence_transformers.json"
    if st_file.exists():
        st = read_json(st_file)
        cfg.prompt = (st.get("prompts") or {}).get(st.get("default_prompt_name") or "", "")
        dims = st.get(DIMENSIONS_KEY)
        if dims is not None:
            if not isinstance(dims, list) or not all(isinstance(d, int) and d > 0 for d in dims):
                raise ZhembedError(f"{st_file}: {DIMENSIONS_KEY} must be a list of positive integers, got {dims!r}")
            cfg.dimensions = sorted(dims, reverse=True)
    return cfg


def read_calibration(model_dir: Path) -> dict:
    """calibration.json: knots `cosine` and `probability` (both increasing) of a monotone map; a clear error
    when the directory has none or it is malformed."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.exists():
        raise ZhembedError(f"{model_dir} has no {CALIBRATION_FILE}, so it gives no calibrated scores; use raw cosine, "
                           "or fit one: zhembed calibrate --model DIR --train FILES")
    data = read_json(path)
    x, y = data.get("cosine") if isinstance(data, dict) else None, data.get("probability") if isinstance(data, dict) else None
    ok = (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) >= 2
          and all(isinstance(v, (int, float)) for v in x + y) and x == sorted(x) and y == sorted(y)
          and 0 <= y[0] and y[-1] <= 1)
    if not ok:
        raise ZhembedError(f"{path}: needs increasing lists 'cosine' and 'probability' (in [0, 1]) of equal length")
    return data


def write_calibration(model_dir: Path, data: dict) -> None:
    write_json(Path(model_dir) / CALIBRATION_FILE, data)


def read_model_config(model_dir: Path) -> dict:
    """config.json of a model directory."""
    return read_json(Path(model_dir) / CONFIG_FILE)


def update_config(model_dir: Path, **changes) -> dict:
    """Change fields of config.json (written atomically); returns the new config."""
    config = {**read_model_config(model_dir), **changes}
    write_json(Path(model_dir) / CONFIG_FILE, config)
    return config


def num_layers(model_dir: Path) -> int | None:
    return read_model_config(model_dir).get("num_hidden_layers")


def set_dimensions(model_dir: Path, dimensions: list[int]) -> None:
    """Record the Matryoshka sizes the model serves, largest first, in config_sentence_transformers.json."""
    st_file = Path(model_dir) / ST_CONFIG_FILE
    st_config = read_json(st_file) if st_file.exists() else {}
    write_json(st_file, {**st_config, DIMENSIONS_KEY: sorted(dimensions, reverse=True)})


def is_sentence_transformers_dir(model_dir: Path) -> bool:
    """Whether the directory is complete as a sentence-transformers model (its modules.json is there)."""
    return (Path(model_dir) / MODULES_FILE).exists()


def tokenizer_files(model_dir: Path) -> tuple[Path | None, Path | None]:
    """(tokenizer.json, vocab.txt) of a directory, each None when absent."""
    model_dir = Path(model_dir)
    found = [model_dir / name for name in (TOKENIZER_FILE, VOCAB_FILE)]
    return tuple(p if p.exists() else None for p in found)  # type: ignore[return-value]


def read_tokenizer_json(model_dir: Path) -> dict:
    """tokenizer.json as JSON ({} when the directory has none)."""
    path = Path(model_dir) / TOKENIZER_FILE
    return read_json(path) if path.exists() else {}


def write_tokenizer(model_dir: Path, tokenizer: Tokenizer | dict) -> None:
    """Save a `tokenizers.Tokenizer` (or its JSON as a dict) as the directory's tokenizer.json, atomically."""
    text = json.dumps(tokenizer, ensure_ascii=False) if isinstance(tokenizer, dict) else tokenizer.to_str(pretty=True)
    write_text_atomic(Path(model_dir) / TOKENIZER_FILE, text)


def write_tokenizer_config(model_dir: Path, config: dict) -> None:
    write_json(Path(model_dir) / TOKENIZER_CONFIG_FILE, config)


def read_pad_tokens(model_dir: Path) -> list[str | int]:
    """The padding token as the directory names it, in order of precedence: tokenizer_config.json's pad_token
    (text), then config.json's pad_token_id."""
    found: list[str | int] = []
    for name, key in ((TOKENIZER_CONFIG_FILE, "pad_token"), (CONFIG_FILE, "pad_token_id")):
        try:
            value = json.loads((Path(model_dir) / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            found.append(value)
    return found


def save_weights(model_dir: Path, state: dict) -> None:
    """model.safetensors from a name -> numpy array dict (written beside, then renamed in)."""
    from safetensors.numpy import save_file

    path = Path(model_dir) / WEIGHTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def resolve_model_dir(path: str | Path) -> Path:
    """The absolute directory of `path`, or a clear error if it is no model directory."""
    model_dir = Path(path).expanduser().resolve()
    if not model_dir.is_dir():
        raise ZhembedError(f"model directory not found: {path}")
    if not (model_dir / CONFIG_FILE).exists() and not is_static_dir(model_dir):
        raise ZhembedError(f"{model_dir} is not a model directory: it has no config.json "
                           "(nor the modules.json of a static model)")
    return model_dir


def is_static_dir(model_dir: Path) -> bool:
    """Whether the directory is a static embedding model (its modules.json starts with StaticEmbedding)."""
    path = Path(model_dir) / MODULES_FILE
    if not path.exists():
        return False
    modules = read_json(path)
    return bool(modules) and isinstance(modules, list) and isinstance(modules[0], dict) \
        and modules[0].get("type", "").rsplit(".", 1)[-1] == "StaticEmbedding"


def write_static_model(out: Path, tokenizer: Tokenizer, table: np.ndarray, normalize: bool = True) -> None:
    """A static model directory: the table as fp16 safetensors, the tokenizer, and the module files that
    sentence-transformers reads (StaticEmbedding at the root, then Normalize)."""
    import numpy as np

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": STATIC_MODULE}]
    if normalize:
        modules.append({"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "1_Normalize").mkdir(exist_ok=True)
    write_tokenizer(out, tokenizer)
    save_weights(out, {STATIC_TENSOR: np.ascontiguousarray(table, dtype=np.float16)})
    write_json(out / ST_CONFIG_FILE, {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    write_json(out / MODULES_FILE, modules)


SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "BF16": None}


def read_static_table(model_dir: Path) -> np.ndarray:
    """The [vocabulary, dim] table of a static model directory as a read-only numpy memory map (fp16 or fp32),
    read with numpy alone."""
    import numpy as np

    path = Path(model_dir) / WEIGHTS_FILE
    header, start = _safetensors_header(path)
    entry = header.get(STATIC_TENSOR)
    if not isinstance(entry, dict) or len(entry.get("shape", ())) != 2:
        raise ZhembedError(f"{path} has no 2-d tensor {STATIC_TENSOR!r}: not a static model's table")
    dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))
    if dtype is None:
        raise ZhembedError(f"{path}: {STATIC_TENSOR} is {entry.get('dtype')}; a static table must be F16 or F32")
    begin, end = entry["data_offsets"]
    rows, dim = entry["shape"]
    if end - begin != rows * dim * np.dtype(dtype).itemsize or start + end > path.stat().st_size:
        raise ZhembedError(f"{path} is truncated or corrupt: {STATIC_TENSOR} does not fit the file")
    return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(rows, dim))


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data starts."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as e:
        raise ZhembedError(f"cannot read the tensor header of {path}: {e}") from None
    if not isinstance(header, dict):
        raise ZhembedError(f"cannot read the tensor header of {path}: not a JSON object")
    return header, 8 + size


def find_onnx(model_dir: Path, onnx_file: str | None = None) -> Path | None:
    """The ONNX file to run: `onnx_file` (relative to the directory or absolute), else int8, else fp32."""
    if onnx_file:
        path = model_dir / onnx_file
        if not path.exists():
            raise ZhembedError(f"ONNX file not found: {path}")
        return path
    return next((p for p in (model_dir / ONNX_DIR / INT8_FILE, model_dir / ONNX_DIR / FP32_FILE) if p.exists()), None)


def copy_model_files(src: Path, dst: Path) -> None:
    """Everything of a model directory except its weights and exports (tokenizer, configs, modules)."""
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*WEIGHT_FILES, "*.onnx", ONNX_DIR, "*.tmp"))


def size_on_disk(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in model.safetensors (the unused pooler excluded), read from the file's header."""
    header, _ = _safetensors_header(Path(model_dir) / WEIGHTS_FILE)
    total = 0
    for name, tensor in header.items():
        if name != "__metadata__" and not name.startswith("pooler."):
            n = 1
            for d in tensor["shape"]:
                n *= d
            total += n
    return total


def model_info(model_dir: Path) -> dict:
    """path, kind, layers, hidden size, vocabulary, parameters, size on disk, prompt and ONNX files."""
    if is_static_dir(model_dir):
        rows, dim = read_static_table(model_dir).shape
        return {"path": str(Path(model_dir).resolve()), "kind": "static (mean of token vectors; numpy runtime)",
                "hidden_size": dim, "vocab_size": rows, "parameters": rows * dim,
                "size_on_disk_mb": round(size_on_disk(model_dir) / 2**20, 1)}
    config = read_model_config(model_dir)
    return {
        "path": str(Path(model_dir).resolve()),
        "kind": f"transformer ({config.get('model_type', 'unknown')})",
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
        "parameters": count_parameters(model_dir),
        "size_on_disk_mb": round(size_on_disk(model_dir) / 2**20, 1),
        "prompt": read_sentence_config(model_dir).prompt,
        "onnx": sorted(p.name for p in (Path(model_dir) / ONNX_DIR).glob("*.onnx")),
    }
