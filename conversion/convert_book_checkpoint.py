"""Convert a checkpoint of the book's `GPTModel` (a `.pth` file) into this project's model.

    python conversion/convert_book_checkpoint.py --input model.pth --config GPT_CONFIG_124M --output my-gpt
    python conversion/convert_book_checkpoint.py --input review_classifier.pth --config gpt-cfg.json --output spam

The input is what chapters 5-7 of the book save (`torch.save(model.state_dict(), "model.pth")`, or a
dict with `model_state_dict`); `--config` is a preset name or a JSON file with the book's config
dictionary. A language model becomes a `GPTScratchForCausalLM`, a chapter-6 classifier a
`GPTScratchForSequenceClassification`. The conversion itself is
`modeling_gpt_scratch.conversion.book`. The output is written to a temporary folder beside
`--output` and moved into place at the end; bad input stops with one `error: ...` line and leaves
no output.
"""

import argparse
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
    parser = argparse.ArgumentParser(**common.script_description(__doc__))
    common.add_arguments(parser, "the book's checkpoint (.pth), as torch.save wrote it")
    parser.add_argument(
        "--config",
        required=True,
        help=f"preset ({', '.join(PRESETS)}) or JSON file with the book's config dictionary",
    )
    args = parser.parse_args(argv)
    common.run_converter(args, book.convert, config=args.config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
