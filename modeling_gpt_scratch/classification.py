"""The book's classification data (chapter 6): the SMS Spam Collection, its balancing and its 70/10/20
split, and labeled CSV/TSV/JSON files, for `examples/finetune_classifier.py`.

    from modeling_gpt_scratch.classification import balance_classes, random_split, read_sms_spam, sms_spam_path

    rows = read_sms_spam(sms_spam_path())          # 5,572 (text, label) rows, downloaded once
    train, val, test = random_split(balance_classes(rows))   # 1,045 / 149 / 300, the book's very rows

The book does this with pandas (`pd.read_csv(..., sep="\\t")`, `df.sample(747, random_state=123)`,
`df.sample(frac=1, random_state=123)`); here it is the `csv` module and numpy's `RandomState`, which give
the same rows in the same order (tests/test_finetune_classifier.py compares them with pandas).
"""

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .data import DataError, cached_download, default_cache_dir

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_FILE = "SMSSpamCollection"  # the member of the zip file, and the name in the cache
SMS_SPAM_LABELS = ["ham", "spam"]  # the book's mapping: ham 0, spam 1


def sms_spam_path(cache_dir=None, url: str = SMS_SPAM_URL, timeout: float = 60.0) -> Path:
    """The SMS Spam Collection (tab-separated `label<TAB>text` lines) in `cache_dir` (default
    `default_cache_dir()`) under `sms_spam_collection/SMSSpamCollection`, taken out of UCI's zip file
    once (see `data.cached_download`)."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def unzip(payload: bytes) -> bytes:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            member = next((n for n in archive.namelist() if Path(n).name == SMS_SPAM_FILE), None)
            if member is None:
                raise zipfile.BadZipFile(f"the archive holds no {SMS_SPAM_FILE}")
            return archive.read(member)

    path = cache_dir / "sms_spam_collection" / SMS_SPAM_FILE
    return cached_download(
        path, url, f"the file {SMS_SPAM_FILE} from {url} (5,574 lines)", timeout, unpack=unzip
    )


def read_sms_spam(path) -> list[tuple[str, str]]:
    """(text, label) rows of the SMS file, parsed as the book's `pd.read_csv(sep="\\t", header=None)`:
    with default CSV quoting, so one message with an unbalanced `"` swallows the next two lines and the
    file gives 5,572 rows (4,825 ham, 747 spam), not its 5,574 lines."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter="\t") if row]
    bad = [i for i, row in enumerate(rows) if len(row) != 2]
    if bad:
        raise DataError(f"{path}: row {bad[0] + 1} has {len(rows[bad[0]])} fields; expected label<TAB>text")
    return [(text, label) for label, text in rows]


def balance_classes(rows, seed: int = 123) -> list[tuple[str, str]]:
    """Every class cut down to the size of the smallest, as the book's `create_balanced_dataset`:
    `df[ham].sample(n_spam, random_state=123)` then the spam rows. pandas draws a sample as
    `RandomState(seed).permutation(len)[:n]`, a fresh generator per call; so does this."""
    by_label = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    smallest = min(by_label, key=lambda label: (len(by_label[label]), label))
    n = len(by_label[smallest])
    out = []
    for label in sorted(by_label):
        if label != smallest:
            group = by_label[label]
            out += [group[i] for i in np.random.RandomState(seed).permutation(len(group))[:n]]
    return out + by_label[smallest]


def random_split(rows, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123):
    """The book's `random_split`: shuffle (`df.sample(frac=1, random_state=123)`), then the first 70%
    train, the next 10% validate, the rest test (1,494 rows: 1,045 / 149 / 300)."""
    rows = [rows[i] for i in np.random.RandomState(seed).permutation(len(rows))]
    train_end = int(len(rows) * train_frac)
    validation_end = train_end + int(len(rows) * validation_frac)
    return rows[:train_end], rows[train_end:validation_end], rows[validation_end:]


def _find_column(name: str, columns) -> str | None:
    """`name` among `columns`: exactly, else ignoring case (the book's CSVs say `Label`, `Text`)."""
    if name in columns:
        return name
    matches = [c for c in columns if isinstance(c, str) and c.strip().lower() == name.strip().lower()]
    return matches[0] if len(matches) == 1 else None


def _headerless_label_column(rows) -> int | None:
    """Which column holds the labels of a two-column file with no header line (the book's
    `SMSSpamCollection(.tsv)`: `label<TAB>text`), or None when the first row looks like a header.
    A header's names do not come back as values below it; a first row's label does (ham, ham, ...)."""
    if len(rows) < 2 or any(len(row) != 2 for row in rows):
        return None
    recurring = [i for i in (0, 1) if any(row[i] == rows[0][i] for row in rows[1:])]
    if not recurring:
        return None
    return min(recurring, key=lambda i: (len({row[i] for row in rows}), i))  # fewer distinct values


def read_labeled_file(path, text_column: str = "text", label_column: str = "label") -> list[tuple[str, str]]:
    """(text, label) rows of a CSV (`.csv`), TSV (`.tsv`, `.tab`, `.txt`, no suffix) or JSON file
    (`.json`: a list of objects; `.jsonl`: one object per line). Labels come back as strings.

    The book's own files are read as they are: column names match ignoring case (its `train.csv`,
    `validation.csv`, `test.csv` have `Label,Text`), a two-column file without a header line is
    `label<TAB>text` (its `SMSSpamCollection.tsv`; the label column is the one whose first value
    recurs), and a UTF-8 byte-order mark is skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if suffix in (".json", ".jsonl"):
                text = f.read()
                if not text.strip():
                    raise DataError(f"{path} is empty")
                if suffix == ".jsonl":
                    records = [json.loads(line) for line in text.splitlines() if line.strip()]
                else:
                    records = json.loads(text)
                    if isinstance(records, dict) and len(records) == 1:  # {"data": [...]}
                        records = next(iter(records.values()))
                if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                    raise DataError(f"{path} must hold a list of objects (one per example)")
                columns = list(dict.fromkeys(key for record in records for key in record))
            else:
                delimiter = "," if suffix == ".csv" else "\t"
                table = [row for row in csv.reader(f, delimiter=delimiter) if row]
                columns, records = _table_records(path, table, text_column, label_column)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    except csv.Error as error:
        raise DataError(f"{path} is not a readable CSV/TSV file: {error}") from error
    if not records:
        raise DataError(
            f"{path} holds no examples" + (" (only a header line)" if columns else " (empty file)")
        )
    found = {name: _find_column(name, columns) for name in (text_column, label_column)}
    missing = [name for name, column in found.items() if column is None]
    if missing:
        raise DataError(
            f"{path} has no column {' or '.join(repr(c) for c in missing)}; its columns are "
            f"{', '.join(repr(c) for c in columns)} (choose with --text_column and --label_column)"
        )
    text_key, label_key = found[text_column], found[label_column]
    rows = []
    for i, record in enumerate(records):
        text, label = record.get(text_key), record.get(label_key)
        if text is None or label is None or str(label).strip() == "":
            raise DataError(f"{path}: example {i + 1} has no {text_column!r} or no {label_column!r}")
        if not str(text).strip():  # no tokens: nothing for the model to read, and nothing to learn
            raise DataError(
                f"{path}: example {i + 1} has an empty {text_column!r} (is --text_column the column of texts?)"
            )
        rows.append((str(text), str(label).strip()))
    return rows


def _table_records(path, table, text_column, label_column):
    """The column names and one dict per row of a CSV/TSV table, with or without a header line."""
    if not table:
        return [], []
    header = table[0]
    named = all(_find_column(name, header) is not None for name in (text_column, label_column))
    label_index = None if named else _headerless_label_column(table)
    if label_index is not None:  # no header line: label<TAB>text (or text<TAB>label)
        columns = [text_column, text_column]
        columns[label_index] = label_column
        body = table
    else:
        columns, body = header, table[1:]
    for i, row in enumerate(body):
        if len(row) != len(columns):
            line = i + 1 if label_index is not None else i + 2
            raise DataError(
                f"{path}: row {line} has {len(row)} fields where the "
                + ("first row has" if label_index is not None else "header line names")
                + f" {len(columns)}; quote fields that hold the separator"
            )
    return columns, [dict(zip(columns, row, strict=True)) for row in body]


def label_names(labels) -> list[str]:
    """The class names in id order: numeric order when every label is an integer, else sorted
    (ham 0, spam 1, as in the book)."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


__all__ = [
    "SMS_SPAM_URL",
    "SMS_SPAM_LABELS",
    "sms_spam_path",
    "read_sms_spam",
    "balance_classes",
    "random_split",
    "read_labeled_file",
    "label_names",
]
