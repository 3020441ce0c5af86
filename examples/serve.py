"""Serve a saved folder over an OpenAI-compatible HTTP API (`/v1/completions`, `/v1/chat/completions`,
`/v1/models`) with transformers' own server, `transformers serve`.

    python examples/serve.py out/pretrain --port 8000
    python examples/serve.py out/sft --port 8000 --continuous-batching    # paged attention
    curl 127.0.0.1:8000/v1/completions -H 'content-type: application/json' \
        -d '{"model": "out/pretrain", "prompt": "Every effort moves you", "max_tokens": 20}'

Every option of `transformers serve` works (`--help` lists them). Why a script and not the command itself:
transformers 5.17-5.24's server looks the model class up by its name on the `transformers` module, where a
model that is not part of transformers is not (`AttributeError: module transformers has no attribute
GPTScratchForCausalLM`); this puts our classes there and hands over to transformers' CLI. Chat needs a chat
template in the folder's tokenizer: the instruction-tuned folders carry the book's Alpaca template. Needs
the `serve` extra: `pip install -e '.[serve]'`.
"""

import sys

import transformers
from transformers.cli.transformers import main as transformers_cli

import modeling_gpt_scratch


def main(argv=None):
    for name in ("GPTScratchModel", "GPTScratchForCausalLM", "GPTScratchForSequenceClassification"):
        setattr(transformers, name, getattr(modeling_gpt_scratch, name))
    sys.argv = ["transformers", "serve", *(sys.argv[1:] if argv is None else argv)]
    return transformers_cli()


if __name__ == "__main__":
    sys.exit(main())
