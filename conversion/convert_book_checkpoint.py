"""Convert a checkpoint of the book's `GPTModel` (a `.pth` file) into this project's model.

    python conversion/convert_book_checkpoint.py --input model.pth --output my-gpt
    python conversion/convert_book_checkpoint.py --input review_classifier.pth --output spam
    python conversion/convert_book_checkpoint.py --input model.pth --config gpt-cfg.json --output my-gpt

The input is what chapters 5-7 of the book save (`torch.save(model.state_dict(), "model.pth")`, or a
dict with `model_state_dict`). The configuration is read from the checkpoint; what it does not store
(n_heads: the book's value for the width; drop_rate 0.1) is assumed and printed, and `--config` (a
preset name or a JSON file with some of the book's config keys) overrides any value. A language
model becomes a `GPTScratchForCausalLM` with its own head (tied to the token embedding only with
`--tie_word_embeddings`), a chapter-6 classifier a `GPTScratchForSequenceClassification` that reads
the last position of text padded to 120 tokens, as the book does. The conversion itself is
`modeling_gpt_scratch.conversion.book`.
"""

import sys
from pathlib import Path

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpt_scratch import PRESETS
from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.conversion import book, common


def main(argv: list[str] | None = None) -> None:
    input_help = "the book's checkpoint (.pth), as torch.save wrote it"
    common.converter_main(argv, __doc__, book.convert, input_help, options)


def options(parser):
    """This converter's own options, beside the common ones."""
    parser.add_argument(
        "--config",
        help=f"preset ({', '.join(PRESETS)}) or JSON file with (some of) the book's config keys, "
        "overriding what is read from the checkpoint; needed for n_heads at widths other than the book's",
    )
    parser.add_argument(
        "--tie_word_embeddings",
        action="store_true",
        help="share one matrix between the head and the token embedding (only when they are equal)",
    )
    parser.add_argument(
        "--classifier_padded_length",
        type=int,
        help="chapter 6 classifier: pad every input to this many tokens and read the last position "
        f"(default {book.BOOK_CLASSIFIER_PADDED_LENGTH}, the book's SMS max_length, at most the context length)",
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
