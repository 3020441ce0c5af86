"""The book's own code (`llms-from-scratch` 1.0.19 on PyPI, the `book` test extra) as the reference:
its files, its appendix D schedule, its appendix E LoRA, its chapter 6 classifier and its chapter 5
training loop, compared with ours on the same inputs."""

import shutil

import pandas as pd
import pytest
from llms_from_scratch import ch06 as book_ch06

from modeling_gpt_scratch.classification import read_labeled_file, read_sms_spam
from modeling_gpt_scratch.data import DataError


# ------------------------------------------------------------------------------- chapter 6's files
def book_rows(df):
    """(text, label) rows of a pandas frame with the book's `Label` and `Text` columns, as strings."""
    return [(str(text), str(label)) for text, label in zip(df["Text"], df["Label"], strict=True)]


def test_the_book_sms_file_and_its_csvs_are_read_as_they_are(shared_data, tmp_path):
    """Chapter 6 reads `SMSSpamCollection.tsv` (no header, `label<TAB>text`) and writes `train.csv`,
    `validation.csv`, `test.csv` (columns `Label,Text`) with pandas; every one is read without flags."""
    source = shared_data / "sms_spam_collection" / "SMSSpamCollection"
    tsv = tmp_path / "SMSSpamCollection.tsv"  # the name the book's download function gives it
    shutil.copy(source, tsv)
    df = pd.read_csv(tsv, sep="\t", header=None, names=["Label", "Text"])  # the book's own call
    rows = read_labeled_file(tsv)
    assert rows == book_rows(df) == read_sms_spam(source)
    assert len(rows) == 5572
    assert read_labeled_file(source) == rows  # without the suffix, as inside UCI's zip file

    # The rest of the book's chapter 6 preparation, with its own functions, and its to_csv calls.
    balanced = book_ch06.create_balanced_dataset(df)
    balanced["Label"] = balanced["Label"].map({"ham": 0, "spam": 1})
    splits = dict(
        zip(("train", "validation", "test"), book_ch06.random_split(balanced, 0.7, 0.1), strict=True)
    )
    for name, split in splits.items():
        split.to_csv(tmp_path / f"{name}.csv", index=None)
        assert (tmp_path / f"{name}.csv").read_text(encoding="utf-8").startswith("Label,Text\n")
        ours = read_labeled_file(tmp_path / f"{name}.csv")
        assert ours == book_rows(pd.read_csv(tmp_path / f"{name}.csv"))  # as the book's SpamDataset reads it
    assert [len(read_labeled_file(tmp_path / f"{n}.csv")) for n in splits] == [1045, 149, 300]


def test_headerless_files_bom_and_column_case(tmp_path):
    lines = ["ham\tOk lar... Joking wif u oni...", "spam\tWINNER!! claim, now", "ham\tsee you, later"]
    (tmp_path / "sms.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = [
        ("Ok lar... Joking wif u oni...", "ham"),
        ("WINNER!! claim, now", "spam"),
        ("see you, later", "ham"),
    ]
    assert read_labeled_file(tmp_path / "sms.tsv") == expected
    # The text first and the label second is recognised as well: the label column repeats its values.
    swapped = "\n".join("\t".join(reversed(line.split("\t"))) for line in lines)
    (tmp_path / "swapped.txt").write_text(swapped, encoding="utf-8")
    assert read_labeled_file(tmp_path / "swapped.txt") == expected

    # A byte-order mark (Excel's "CSV UTF-8") in front of the header or of the first label.
    pd.DataFrame({"Label": [0, 1], "Text": ["hi, there", 'say "hi"']}).to_csv(
        tmp_path / "bom.csv", index=None, encoding="utf-8-sig"
    )
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbfLabel,Text")
    assert read_labeled_file(tmp_path / "bom.csv") == [("hi, there", "0"), ('say "hi"', "1")]
    (tmp_path / "bom.tsv").write_text("\n".join(lines), encoding="utf-8-sig")
    assert read_labeled_file(tmp_path / "bom.tsv") == expected
    (tmp_path / "bom.jsonl").write_text('{"Text": "hi", "LABEL": 1}\n', encoding="utf-8-sig")
    assert read_labeled_file(tmp_path / "bom.jsonl") == [("hi", "1")]

    # A header whose names are no columns of ours is still a header, with the error naming the fix.
    (tmp_path / "named.tsv").write_text("sentence\ty\nhi\t1\nyo\t0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'text' or 'label'; its columns are 'sentence', 'y'"):
        read_labeled_file(tmp_path / "named.tsv")
    assert read_labeled_file(tmp_path / "named.tsv", "sentence", "y") == [("hi", "1"), ("yo", "0")]
    (tmp_path / "ragged.csv").write_text("Label,Text\n0,hi\n1,a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 3 has 3 fields where the header line names 2; quote"):
        read_labeled_file(tmp_path / "ragged.csv")
