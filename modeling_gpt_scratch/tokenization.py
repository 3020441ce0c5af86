"""GPT-2's byte-pair encoding, as a Hugging Face tokenizer and as the book's tiktoken encoding.

Both give the same ids on any text; `<|endoftext|>` (50256) is a special token in both, and the
padding token, as in the book's chapters 6 and 7.
"""

import json
import os

import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase

GPT2_HUB_ID = "openai-community/gpt2"
EOT = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
GPT2_MERGES = 50000  # lines of vocab.bpe after its "#version" header


def get_tiktoken_encoding(name: str = "gpt2") -> tiktoken.Encoding:
    """The encoding the book uses (`tiktoken.get_encoding("gpt2")`)."""
    return tiktoken.get_encoding(name)


def text_to_token_ids(text: str, tokenizer=None):
    """The book's helper (chapter 5): a (1, n) tensor of ids; `<|endoftext|>` is allowed in `text`."""
    import torch

    tokenizer = tokenizer or get_tiktoken_encoding()
    if isinstance(tokenizer, tiktoken.Encoding):
        ids = tokenizer.encode(text, allowed_special={EOT})
    else:
        ids = tokenizer.encode(text)
    return torch.tensor(ids).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer=None) -> str:
    """The book's helper (chapter 5): ids (any shape with one row) back to text."""
    tokenizer = tokenizer or get_tiktoken_encoding()
    ids = token_ids.squeeze(0).tolist() if hasattr(token_ids, "tolist") else list(token_ids)
    return tokenizer.decode(ids)


def _finish(tokenizer: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    if len(tokenizer) != GPT2_VOCAB_SIZE or tokenizer.convert_tokens_to_ids(EOT) != GPT2_VOCAB_SIZE - 1:
        raise ValueError(
            f"The tokenizer from {source} has {len(tokenizer)} tokens (<|endoftext|> = "
            f"{tokenizer.convert_tokens_to_ids(EOT)}); GPT-2's has {GPT2_VOCAB_SIZE} with <|endoftext|> = 50256. "
            "Point it at GPT-2's vocab.json/merges.txt (or encoder.json/vocab.bpe) files."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOT  # the book pads with <|endoftext|>
    tokenizer.clean_up_tokenization_spaces = False  # decode gives back the text, as tiktoken does
    return tokenizer


def load_tokenizer(name_or_path: str = GPT2_HUB_ID, **kwargs) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer from the Hub or a folder, with `<|endoftext|>` as padding token."""
    return _finish(AutoTokenizer.from_pretrained(name_or_path, **kwargs), name_or_path)


def tokenizer_from_openai_files(encoder_json: str, vocab_bpe: str) -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer from OpenAI's release files (`encoder.json`, `vocab.bpe`), as shipped next
    to each of their checkpoints."""
    for path in (encoder_json, vocab_bpe):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GPT-2 tokenizer file not found: {path}")
    with open(encoder_json, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(vocab_bpe, encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    # Check the sizes first: a cut-short vocabulary fails inside `tokenizers` with a bare Exception,
    # and cut-short merges would build a tokenizer that quietly splits words differently.
    if not isinstance(vocab, dict):
        raise ValueError(
            f"{encoder_json} holds a JSON {type(vocab).__name__}; expected GPT-2's token -> id object."
        )
    if len(vocab) != GPT2_VOCAB_SIZE or vocab.get(EOT) != GPT2_VOCAB_SIZE - 1:
        raise ValueError(
            f"{encoder_json} has {len(vocab)} entries (<|endoftext|> = {vocab.get(EOT)}); "
            f"GPT-2's encoder.json has {GPT2_VOCAB_SIZE} with <|endoftext|> = {GPT2_VOCAB_SIZE - 1}."
        )
    if len(merges) != GPT2_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(
            f"{vocab_bpe} has {len(merges)} merge lines; GPT-2's vocab.bpe has {GPT2_MERGES} "
            f"(one per token of its {GPT2_VOCAB_SIZE} beyond the 256 bytes and <|endoftext|>), each two symbols."
        )
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=1024,
    )
    return _finish(tokenizer, f"{encoder_json} and {vocab_bpe}")
