"""Convert one of OpenAI's original GPT-2 releases (TensorFlow checkpoints) into this project's model.

    python conversion/convert_openai_gpt2.py --input models/124M --output out/gpt2-124M
    python conversion/convert_openai_gpt2.py --input models/1558M --output out/gpt2-xl --dtype bfloat16

The input is the folder OpenAI published (`hparams.json`, `model.ckpt.*`, `encoder.json`,
`vocab.bpe`), read without TensorFlow; the output folder holds the model with a tied head and the
release's tokenizer. The conversion itself is `modeling_gpt_scratch.conversion.openai_gpt2`.
"""

import sys
from pathlib import Path

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.conversion import common, openai_gpt2


def main(argv: list[str] | None = None) -> None:
    common.converter_main(argv, __doc__, openai_gpt2.convert, "OpenAI's GPT-2 folder (e.g. models/124M)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
