"""Configuration of the GPT from *Build a Large Language Model (From Scratch)*, chapter 4.

The field names are the book's (`emb_dim`, `n_heads`, ...); `attribute_map` gives the standard
Hugging Face names (`hidden_size`, `num_attention_heads`, ...) so that `generate`, the caches and
the Trainer find what they look for.
"""

import copy

from transformers import PretrainedConfig

# The book's own dictionary (chapter 4), kept verbatim so book code can be pasted as is.
GPT_CONFIG_124M = {
    "vocab_size": 50257,
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}

# OpenAI's GPT-2 release: biased Q/K/V, no dropout, output head tied to the token embedding.
_GPT2 = {
    "vocab_size": 50257,
    "context_length": 1024,
    "drop_rate": 0.0,
    "qkv_bias": True,
    "tie_word_embeddings": True,
}

PRESETS = {
    "gpt2-small": {**_GPT2, "emb_dim": 768, "n_layers": 12, "n_heads": 12},  # 124M
    "gpt2-medium": {**_GPT2, "emb_dim": 1024, "n_layers": 24, "n_heads": 16},  # 355M
    "gpt2-large": {**_GPT2, "emb_dim": 1280, "n_layers": 36, "n_heads": 20},  # 774M
    "gpt2-xl": {**_GPT2, "emb_dim": 1600, "n_layers": 48, "n_heads": 25},  # 1558M
    # The book's chapter-4/5 model: untied head (163M parameters), no Q/K/V bias, dropout 0.1.
    "GPT_CONFIG_124M": {**GPT_CONFIG_124M, "tie_word_embeddings": False},
    # A few-MB model for demos and tests on a laptop CPU.
    "tiny": {
        "vocab_size": 50257,
        "context_length": 256,
        "emb_dim": 128,
        "n_heads": 4,
        "n_layers": 4,
        "drop_rate": 0.1,
        "qkv_bias": False,
        "tie_word_embeddings": True,
    },
}

# Written into every saved config, so a folder loads with `trust_remote_code=True` through any
# Auto class even when this package is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_gpt_scratch.GPTScratchConfig",
    "AutoModel": "modeling_gpt_scratch.GPTScratchModel",
    "AutoModelForCausalLM": "modeling_gpt_scratch.GPTScratchForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gpt_scratch.GPTScratchForSequenceClassification",
}

EOT_ID = 50256  # <|endoftext|>, also the book's padding id
# How GPTScratchForSequenceClassification reads a text: at its last real token (ours), or as chapter 6
# does, at the last position of the text right-padded with pad_token_id to classifier_padded_length.
CLASSIFIER_POOLINGS = ("last_token", "last_position")


class GPTScratchConfig(PretrainedConfig):
    """The book's `GPT_CONFIG_124M` dictionary as a `PretrainedConfig`.

    Defaults are the book's chapter-4 model (untied head). `GPTScratchConfig.from_preset("gpt2-small")`
    gives the shape of OpenAI's GPT-2 checkpoints.
    """

    model_type = "gpt_scratch"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]  # the KV cache: "cache" from transformers 5.24
    # Tensor parallelism (`from_pretrained(..., tp_plan="auto")` under torchrun), Megatron's split: Q, K, V and
    # the feed-forward's first Linear split by output features (each rank holds whole heads and a slice of the
    # hidden units), the output projections by input features, so each block needs two all-reduces; the token
    # embedding split by vocabulary. transformers matches rules with every layer number replaced by `*`, so the
    # book's `ff.layers.0` and `ff.layers.2` (an nn.Sequential) share one rule: its style, "gpt_scratch_ff"
    # (registered by modeling_gpt_scratch.py), splits each Linear by where it sits, keeping the book's names.
    base_model_tp_plan = {
        "tok_emb": "embedding_rowwise",
        "trf_blocks.*.att.W_query": "colwise",
        "trf_blocks.*.att.W_key": "colwise",
        "trf_blocks.*.att.W_value": "colwise",
        "trf_blocks.*.att.out_proj": "rowwise",
        "trf_blocks.*.ff.layers.*": "gpt_scratch_ff",
    }
    # Pipeline stages: which inputs each top-level part takes and what it hands on.
    base_model_pp_plan = {
        "tok_emb": (["input_ids"], ["inputs_embeds"]),
        "pos_emb": (["position_ids"], ["position_embeds"]),
        "trf_blocks": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "final_norm": (["hidden_states"], ["hidden_states"]),
    }
    attribute_map = {
        "hidden_size": "emb_dim",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "context_length",
    }

    def __init__(
        self,
        vocab_size=50257,
        context_length=1024,
        emb_dim=768,
        n_heads=12,
        n_layers=12,
        drop_rate=0.1,
        qkv_bias=False,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        use_cache=True,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        pad_token_id=EOT_ID,
        classifier_pooling="last_token",
        classifier_padded_length=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.emb_dim = emb_dim
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.drop_rate = drop_rate
        self.qkv_bias = qkv_bias
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.classifier_pooling = classifier_pooling
        self.classifier_padded_length = classifier_padded_length
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.tie_word_embeddings = tie_word_embeddings
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTScratchConfig: `{name}` must be a positive integer, got {value!r}.")
        if self.emb_dim % self.n_heads != 0:
            divisors = [h for h in range(1, min(self.emb_dim, 64) + 1) if self.emb_dim % h == 0]
            raise ValueError(
                f"GPTScratchConfig: `emb_dim` ({self.emb_dim}) must be divisible by `n_heads` ({self.n_heads}) "
                f"so each head gets emb_dim // n_heads dimensions; choose n_heads among {divisors} "
                f"or change emb_dim to a multiple of {self.n_heads}."
            )
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise ValueError(
                f"GPTScratchConfig: `drop_rate` must be in [0, 1), got {self.drop_rate!r} "
                "(0.1 as in the book for pretraining, 0.0 for OpenAI's weights)."
            )
        if not float(self.layer_norm_epsilon) > 0:
            raise ValueError(
                f"GPTScratchConfig: `layer_norm_epsilon` must be > 0, got {self.layer_norm_epsilon!r}."
            )

        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"GPTScratchConfig: `classifier_pooling` must be one of {', '.join(map(repr, CLASSIFIER_POOLINGS))}, "
                f"got {self.classifier_pooling!r} (last_token: the last real token; last_position: the book's "
                "chapter 6 way, the last position after right-padding to classifier_padded_length)."
            )
        length = self.classifier_padded_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length <= 0):
            raise ValueError(
                f"GPTScratchConfig: `classifier_padded_length` must be a positive integer or None, got {length!r} "
                "(the book pads the SMS messages to 120 tokens)."
            )
        if length is not None and length > self.context_length:
            raise ValueError(
                f"GPTScratchConfig: `classifier_padded_length` ({length}) exceeds `context_length` "
                f"({self.context_length}); the book truncates to at most the context length."
            )
        if self.classifier_pooling == "last_position" and self.pad_token_id is None:
            raise ValueError(
                "GPTScratchConfig: `classifier_pooling='last_position'` pads with `pad_token_id`, which is None; "
                "set it (the book pads with <|endoftext|>, 50256)."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTScratchConfig":
        """A preset by name (`gpt2-small` ... `gpt2-xl`, `GPT_CONFIG_124M`, `tiny`), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    @classmethod
    def from_book_dict(cls, book_config: dict, **overrides) -> "GPTScratchConfig":
        """The book's config dictionary (`GPT_CONFIG_124M` and the like) as a config."""
        known = {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias"}
        missing = sorted(known - set(book_config))
        if missing:
            raise ValueError(
                f"The book's config dictionary lacks {', '.join(missing)} (it needs {sorted(known)})."
            )
        return cls(**{k: book_config[k] for k in known}, **overrides)

    def to_book_dict(self) -> dict:
        """The config as the book's dictionary, for book code (`GPTModel(cfg)`)."""
        return {
            "vocab_size": self.vocab_size,
            "context_length": self.context_length,
            "emb_dim": self.emb_dim,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "drop_rate": self.drop_rate,
            "qkv_bias": self.qkv_bias,
        }
