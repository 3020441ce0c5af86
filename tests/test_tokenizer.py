"""GPT-2's tokenizer as a Hugging Face tokenizer gives exactly the book's tiktoken ids.

Both ways of building it (`load_tokenizer()` from the Hub files, `tokenizer_from_openai_files` from
OpenAI's `encoder.json`/`vocab.bpe`) are checked against `tiktoken.get_encoding("gpt2")` on the
book's text and on strings where byte-level BPE implementations tend to differ.
"""

import json

import pytest
import torch
from transformers import AutoTokenizer

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.tokenization import (
    get_tiktoken_encoding,
    load_tokenizer,
    text_to_token_ids,
    token_ids_to_text,
    tokenizer_from_openai_files,
)

EOT = "<|endoftext|>"

TRICKY = [
    "",
    "Hello, world!",
    f"Hello{EOT}world",
    f"{EOT}",
    f"{EOT}{EOT} two in a row",
    f"before {EOT} after",
    f"{EOT}\n\nstarts a document",
    "<|endoftext",  # not the special token: plain text
    "<|endoftext|x>",
    "héllo wörld, naïve café — “quotes” …",
    "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧 and a flag 🇯🇵",
    "日本語のテキストと中文和한국어",
    "e\u0301 (combining accent), \u200b zero width, \ufeff BOM, ﬁ ligature",
    "a  b   c    d",
    "tabs\tand\t\tmore\t\t\ttabs",
    "lines\nand\n\nblank\n\n\nlines\r\nwindows\r\n",
    "   leading spaces",
    "trailing spaces   ",
    "\n\n  \t both ends \t  \n\n",
    " ",
    "\n",
    "\t",
    "don't won't I'm you're we've they'll she'd it's DON'T Y'ALL",
    "'s 're 've 'm 'll 'd",
    "1 12 123 1234 12345 3.14159 1,000,000 -42 0x1F 2024-01-01",
    "def f(x):\n    return x ** 2  # code\n",
    "\x00\x01 control \x7f chars",
]


@pytest.fixture(scope="module")
def enc():
    return get_tiktoken_encoding()


@pytest.fixture(scope="module")
def hf_tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def openai_files(shared_data):
    folder = shared_data / "gpt2_tokenizer" / "openai"
    return folder / "encoder.json", folder / "vocab.bpe"


@pytest.fixture(scope="module")
def openai_tok(openai_files):
    return tokenizer_from_openai_files(*map(str, openai_files))


@pytest.fixture(params=["load_tokenizer", "openai_files"])
def tok(request):
    return request.getfixturevalue({"load_tokenizer": "hf_tok", "openai_files": "openai_tok"}[request.param])


def tiktoken_ids(enc, text):
    return enc.encode(text, allowed_special={EOT})


def test_the_verdict(tok, enc, shared_data):
    text = (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")
    expected = tiktoken_ids(enc, text)
    assert len(expected) == 5145 and expected[:4] == [40, 367, 2885, 1464]
    ids = tok.encode(text)
    assert ids == expected
    assert tok(text)["input_ids"] == expected
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_tricky_strings(tok, enc, text):
    expected = tiktoken_ids(enc, text)
    assert tok.encode(text) == expected
    assert tok.decode(expected) == text
    assert enc.decode(expected) == text


def test_batch_encoding_matches(tok, enc):
    batch = tok(TRICKY)["input_ids"]
    assert batch == [tiktoken_ids(enc, t) for t in TRICKY]


def test_known_ids_from_the_book(tok):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."
    ids = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 1659, 617, 34680, 27271, 13]  # fmt: skip
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_special_tokens(tok):
    assert len(tok) == 50257
    assert tok.pad_token == EOT and tok.pad_token_id == 50256
    assert tok.eos_token_id == 50256 and tok.bos_token_id == 50256
    assert tok.convert_tokens_to_ids(EOT) == 50256
    # no BOS/EOS added around the text, as tiktoken
    assert tok("a b")["input_ids"] == [64, 275]
    assert tok.decode([50256, 11], skip_special_tokens=True) == ","


def test_padding_uses_endoftext(tok):
    batch = tok(["Every effort moves you", "Hi"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[6109, 3626, 6100, 345], [17250, 50256, 50256, 50256]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]


def test_both_tokenizers_agree_token_by_token(hf_tok, openai_tok):
    assert hf_tok.get_vocab() == openai_tok.get_vocab()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny randomly initialised model saved with save_pretrained (vocab of GPT-2's size)."""
    folder = tmp_path_factory.mktemp("model")
    config = GPTScratchConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=2, n_layers=2)
    GPTScratchForCausalLM(config).save_pretrained(folder)
    return folder


def test_save_next_to_model_and_reload(tok, model_dir, tmp_path, enc):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in model_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    tok.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gpt_scratch"

    reloaded = AutoTokenizer.from_pretrained(folder)
    assert len(reloaded) == 50257
    assert reloaded.pad_token == EOT and reloaded.pad_token_id == 50256
    for text in TRICKY + ["Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."]:
        ids = reloaded.encode(text)
        assert ids == tiktoken_ids(enc, text)
        assert reloaded.decode(ids) == text

    # and the model beside it takes its ids
    model = GPTScratchForCausalLM.from_pretrained(folder)
    batch = reloaded(["Every effort moves you", "Hi"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 4, 50257)


@pytest.mark.parametrize("which", ["tiktoken", "hf"])
def test_text_to_token_ids_round_trip(which, hf_tok, enc):
    tokenizer = enc if which == "tiktoken" else hf_tok
    text = "Every effort moves you <|endoftext|> forward"
    ids = text_to_token_ids(text, tokenizer)
    assert isinstance(ids, torch.Tensor)
    assert ids.tolist() == [[6109, 3626, 6100, 345, 220, 50256, 2651]]
    assert token_ids_to_text(ids, tokenizer) == text
    assert token_ids_to_text(ids[0].tolist(), tokenizer) == text


def test_text_to_token_ids_defaults_to_tiktoken():
    ids = text_to_token_ids("Every effort moves you")
    assert ids.tolist() == [[6109, 3626, 6100, 345]]
    assert token_ids_to_text(ids) == "Every effort moves you"


def test_missing_file_names_it(openai_files, tmp_path):
    encoder, bpe = openai_files
    missing = tmp_path / "nope" / "encoder.json"
    with pytest.raises(FileNotFoundError, match="nope/encoder.json"):
        tokenizer_from_openai_files(str(missing), str(bpe))
    with pytest.raises(FileNotFoundError, match="vocab-missing.bpe"):
        tokenizer_from_openai_files(str(encoder), str(tmp_path / "vocab-missing.bpe"))


def test_truncated_vocab_is_an_error(openai_files, tmp_path):
    encoder, bpe = openai_files
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    short = tmp_path / "encoder.json"
    short.write_text(json.dumps({k: v for k, v in vocab.items() if v < 1000}), encoding="utf-8")
    with pytest.raises(ValueError, match="50257"):
        tokenizer_from_openai_files(str(short), str(bpe))

    no_eot = tmp_path / "encoder-no-eot.json"
    no_eot.write_text(json.dumps({k: v for k, v in vocab.items() if k != EOT}), encoding="utf-8")
    with pytest.raises(ValueError, match="50257"):
        tokenizer_from_openai_files(str(no_eot), str(bpe))


def test_truncated_merges_are_an_error(openai_files, tmp_path):
    """Fewer merges still build a tokenizer of 50257 tokens, which splits words differently."""
    encoder, bpe = openai_files
    lines = bpe.read_text(encoding="utf-8").split("\n")
    short = tmp_path / "vocab.bpe"
    short.write_text("\n".join(lines[:1000]), encoding="utf-8")
    with pytest.raises(ValueError, match="50000"):
        tokenizer_from_openai_files(str(encoder), str(short))


def test_load_tokenizer_from_folder(shared_data, enc):
    tok = load_tokenizer(str(shared_data / "gpt2_tokenizer" / "hf"))
    assert len(tok) == 50257 and tok.pad_token_id == 50256
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."
    assert tok.encode(text) == tiktoken_ids(enc, text)
