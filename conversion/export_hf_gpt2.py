"""Export this project's model to a Hugging Face GPT-2 folder that plain `transformers` loads.

    python conversion/export_hf_gpt2.py --input my-gpt --output my-gpt-hf
    python conversion/export_hf_gpt2.py --input spam-classifier --output spam-hf --fold_score_bias

The input is a folder saved by `save_pretrained` (or a Hub id): a `GPTScratchForCausalLM` becomes a
`GPT2LMHeadModel`, a `GPTScratchForSequenceClassification` a `GPT2ForSequenceClassification`, with
the same logits, loadable without this package or `trust_remote_code`. GPT-2's classifier head has
no bias: a non-zero one is an error unless `--fold_score_bias` moves it into the final LayerNorm's
shift. The export itself is `modeling_gpt_scratch.conversion.export_gpt2`.
"""

import sys
from pathlib import Path

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.conversion import common, export_gpt2


def main(argv: list[str] | None = None) -> None:
    input_help = "our model folder (save_pretrained) or Hub id"
    convert, done = export_gpt2.convert, "Exported ... as GPT-2"
    common.converter_main(argv, __doc__, convert, input_help, options, folder_input=True, done=done)


def options(parser):
    """This converter's own options, beside the common ones."""
    parser.add_argument(
        "--fold_score_bias",
        action="store_true",
        help="classifier: move the head's bias into ln_f.bias (GPT-2's head has none)",
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
