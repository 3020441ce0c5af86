"""The GPT from *Build a Large Language Model (From Scratch)* as a Hugging Face model.

Importing the package registers the config and models with the Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` needs no `trust_remote_code` once it is installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from . import modeling_gpt_scratch
from .configuration_gpt_scratch import GPT_CONFIG_124M, PRESETS, GPTScratchConfig
from .modeling_gpt_scratch import *  # noqa: F403  (the model file's public names: its __all__)
from .modeling_gpt_scratch import GPTScratchForCausalLM, GPTScratchForSequenceClassification, GPTScratchModel

AutoConfig.register(GPTScratchConfig.model_type, GPTScratchConfig, exist_ok=True)
AutoModel.register(GPTScratchConfig, GPTScratchModel, exist_ok=True)
AutoModelForCausalLM.register(GPTScratchConfig, GPTScratchForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(
    GPTScratchConfig, GPTScratchForSequenceClassification, exist_ok=True
)

# `save_pretrained` copies this package's config and modeling files next to the weights.
GPTScratchConfig.register_for_auto_class()
GPTScratchModel.register_for_auto_class("AutoModel")
GPTScratchForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GPTScratchForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

# The model file's public names (it lists them itself), and the config's.
__all__ = ["GPT_CONFIG_124M", "PRESETS", "GPTScratchConfig", *modeling_gpt_scratch.__all__]
