"""The sentence-transformers directory format: the interface every zhembed model speaks.

A model directory holds a transformers model (config.json, model.safetensors, tokenizer.json) plus
modules.json, 1_Pooling/config.json, 2_Normalize/, sentence_bert_config.json and
config_sentence_transformers.json, so `SentenceTransformer(dir)` and `AutoModel` load it as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ZhembedError

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


def _write_json(path: Path, obj: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
    _write_json(out / "modules.json", modules)
    pooling = {key: cfg.pooling == mode for mode, key in POOLING_KEYS.items()}
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim, **pooling,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False, "include_prompt": True,
    })
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": cfg.max_seq_length, "do_lower_case": False})
    prompts = dict(prompts or ({"query": cfg.prompt} if cfg.prompt else {}))
    default = next((name for name, text in prompts.items() if text == cfg.prompt and cfg.prompt), None)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": prompts, "default_prompt_name": default, "similarity_fn_name": "cosine",
    })


def _read_json(path: Path) -> dict | list:
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
        for module in _read_json(modules_file):
            if module.get("type", "").rsplit(".", 1)[-1] == "Pooling":
                pool = _read_json(model_dir / module["path"] / "config.json")
                cfg.dim = pool.get("word_embedding_dimension")
                modes = [mode for mode, key in POOLING_KEYS.items() if pool.get(key)]
                cfg.pooling = modes[0] if modes else "mean"
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        cfg.max_seq_length = int(_read_json(sbert).get("max_seq_length") or cfg.max_seq_length)
    st_file = model_dir / "config_sentence_transformers.json"
    if st_file.exists():
        st = _read_json(st_file)
        cfg.prompt = (st.get("prompts") or {}).get(st.get("default_prompt_name") or "", "")
    return cfg
