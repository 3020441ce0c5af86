"""Convert a Hugging Face GPT-2 checkpoint (`GPT2LMHeadModel`) into this project's model.

    python conversion/convert_hf_gpt2.py --input openai-community/gpt2 --output out/gpt2-scratch
    python conversion/convert_hf_gpt2.py --input path/to/gpt2-folder --output out/x --dtype bfloat16

The input is a folder (or a Hub id) with `config.json` and safetensors or `pytorch_model.bin`
weights; the output folder loads with `AutoModelForCausalLM.from_pretrained(output)` (and with
`trust_remote_code=True` where this package is not installed), with the input's tokenizer, else
GPT-2's. The conversion itself is `modeling_gpt_scratch.conversion.hf_gpt2`.
"""

import sys
from pathlib import Path

try:
    import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.conversion import common, hf_gpt2


def main(argv: list[str] | None = None) -> None:
    input_help = "GPT-2 folder (config.json + weights) or Hub id"
    common.converter_main(argv, __doc__, hf_gpt2.convert, input_help, folder_input=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
