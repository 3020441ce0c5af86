"""The book's pretraining data (chapters 2 and 5): *The Verdict*, its 90/10 split and the sliding-window
dataset, for `examples/pretrain.py` and any other script that trains on plain text.

    from modeling_gpt_scratch.data import create_dataloader_v1, the_verdict_path, train_val_split

    text = the_verdict_path().read_text(encoding="utf-8")   # downloaded once, then from the cache
    train_text, val_text = train_val_split(text)             # the book's 90/10 split on characters
    train_loader = create_dataloader_v1(train_text, batch_size=2, max_length=256, stride=256)

`GPTDatasetV1` and `create_dataloader_v1` keep the book's names and behaviour: window `i` holds the
tokens `[i * stride, i * stride + max_length)` as input and the same window moved one token to the
right as target, and a text of `n` tokens gives `len(range(0, n - max_length, stride))` windows.
`SlidingWindowDataset` is the same over an array of token ids that is already tokenized, without
copying it.
"""

import glob
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .cli import CLIError
from .tokenization import get_tiktoken_encoding

THE_VERDICT_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt"
)
THE_VERDICT_FILE = "the-verdict.txt"
THE_VERDICT_CHARS = 20479  # the book's len(raw_text)
TEXT_SUFFIXES = (".txt", ".text", ".md")


class DataError(CLIError, ValueError):
    """Input data that cannot be used; the message says what to do (a `CLIError`: one `error:` line)."""


def default_cache_dir() -> Path:
    """Where downloaded data sets go: `$GPT_SCRATCH_CACHE`, else `~/.cache/gpt-scratch/data`."""
    env = os.environ.get("GPT_SCRATCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gpt-scratch" / "data"


def _offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "GPT_SCRATCH_OFFLINE")
    )


def cached_download(path: Path, url: str, what: str, timeout: float = 30.0, unpack=None) -> Path:
    """`path` when it is there, else `url` downloaded to it once; `unpack` turns the downloaded bytes
    into the file's (e.g. one member of a zip archive). The file is written under a temporary name and
    renamed, so a half-download is never taken for the real file.

    Offline (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE` or `GPT_SCRATCH_OFFLINE` set) nothing is
    downloaded, and a missing file is a `DataError` that says where to put `what`.
    """
    path = Path(path)
    if path.is_file():
        return path
    where = f"put {what} at {path}"
    if _offline():
        raise DataError(f"{path} is missing and this machine is offline: {where}, or pass --train_file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
            out.write(unpack(payload) if unpack else payload)
        os.replace(tmp, path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"could not download {url} ({error}): {where}") from error
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def the_verdict_path(cache_dir=None, url: str = THE_VERDICT_URL, timeout: float = 30.0) -> Path:
    """The book's `the-verdict.txt` in `cache_dir` (default `default_cache_dir()`), downloaded from the
    book's repository once (see `cached_download`)."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    what = f"the book's {THE_VERDICT_FILE} ({THE_VERDICT_CHARS:,} characters, from {url})"
    return cached_download(cache_dir / THE_VERDICT_FILE, url, what, timeout)


def resolve_text_files(specs) -> list[Path]:
    """Files named by paths, folders (their *.txt, *.text and *.md files, recursively) or glob
    patterns, in that order, each once. Every entry must give at least one readable file."""
    files = []
    for spec in [specs] if isinstance(specs, str | os.PathLike) else specs:
        spec = os.fspath(spec)
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise DataError(f"folder {spec} holds no {'/'.join(TEXT_SUFFIXES)} files")
        elif path.exists():
            found = [path]
        elif glob.has_magic(spec):
            found = sorted(
                Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p)
            )
            if not found:
                raise DataError(f"no file matches {spec}")
        else:
            raise DataError(f"{spec} does not exist")
        for p in found:
            if p.resolve() not in {f.resolve() for f in files}:
                files.append(p)
    for p in files:
        check_readable(p)
    return files


def check_readable(path: Path):
    """A `DataError` naming the file when it cannot be read as UTF-8 text."""
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            while f.read(1 << 24):
                pass
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error


def train_val_split(text: str, train_ratio: float = 0.9) -> tuple[str, str]:
    """The book's split (chapter 5): the first 90% of the characters train, the rest validate."""
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]


def num_windows(num_tokens: int, block_size: int, stride: int) -> int:
    """Windows the book's loop `range(0, num_tokens - block_size, stride)` makes."""
    return len(range(0, num_tokens - block_size, stride))


class SlidingWindowDataset(Dataset):
    """The book's `GPTDatasetV1` over token ids: item `i` is `(input, target)`, two LongTensors of
    `block_size` tokens, the target being the input moved one token on. The ids are stored once
    (int32 when they fit), not once per window."""

    def __init__(self, token_ids, block_size: int, stride: int):
        if block_size < 1 or stride < 1:
            raise ValueError(f"block_size and stride must be >= 1, got {block_size} and {stride}")
        ids = np.asarray(token_ids)
        if ids.ndim != 1:
            raise ValueError(f"token_ids must be one sequence, got shape {ids.shape}")
        dtype = np.int32 if ids.size == 0 or (ids.min() >= 0 and ids.max() < 2**31) else np.int64
        self.token_ids = ids.astype(dtype, copy=False)
        self.block_size = block_size
        self.stride = stride
        self.starts = range(0, len(self.token_ids) - block_size, stride)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, idx):
        start = self.starts[idx]
        chunk = torch.from_numpy(self.token_ids[start : start + self.block_size + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]


class GPTDatasetV1(SlidingWindowDataset):
    """The book's dataset (chapter 2): `GPTDatasetV1(txt, tokenizer, max_length, stride)`, with the
    tiktoken encoding or a `transformers` tokenizer; `<|endoftext|>` in the text is the special token."""

    def __init__(self, txt, tokenizer, max_length, stride):
        if hasattr(tokenizer, "encode_ordinary"):  # tiktoken
            token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        else:
            token_ids = tokenizer(txt, add_special_tokens=False, verbose=False)["input_ids"]
        super().__init__(token_ids, max_length, stride)


def create_dataloader_v1(
    txt,
    batch_size=4,
    max_length=256,
    stride=128,
    shuffle=True,
    drop_last=True,
    num_workers=0,
    tokenizer=None,
):
    """The book's loader (chapter 2, used as is in chapter 5), GPT-2's tiktoken encoding by default."""
    if tokenizer is None:
        tokenizer = get_tiktoken_encoding()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers
    )


__all__ = [
    "THE_VERDICT_URL",
    "DataError",
    "default_cache_dir",
    "the_verdict_path",
    "resolve_text_files",
    "check_readable",
    "train_val_split",
    "num_windows",
    "SlidingWindowDataset",
    "GPTDatasetV1",
    "create_dataloader_v1",
]
