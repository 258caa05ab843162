"""Shared fixtures: offline hub, the real data in ../shared/data, and tiny random models built here."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers or datasets are imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}: the tests expect ../shared/data beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from peftlab.models import resolve_model

    return resolve_model("minilm").path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a normal model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture
def small_csv_data(tmp_path) -> Path:
    """A folder with train and test CSV files of two easily separated classes."""
    folder = tmp_path / "small"
    folder.mkdir()
    good = ["great film, loved it", "wonderful and moving", "a delight from start to end", "brilliant acting", "superb, would watch again", "charming and funny"]
    bad = ["dull and far too long", "a waste of an evening", "terrible script", "boring, I left early", "awful acting", "clumsy and tedious"]
    rows = [(t, "positive") for t in good] + [(t, "negative") for t in bad]
    train = rows * 3
    (folder / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in train))
    (folder / "test.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama causal LM with SmolLM2's tokenizer (and chat template), saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.models import load_tokenizer, resolve_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer(resolve_model("smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
