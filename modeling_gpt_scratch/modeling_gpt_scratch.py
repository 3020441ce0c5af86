"""The GPT from *Build a Large Language Model (From Scratch)* (S. Raschka), chapters 3-4, as a
Hugging Face `transformers` model.

It reads top to bottom like chapter 4: `LayerNorm`, `GELU`, `FeedForward`, `MultiHeadAttention`
(chapter 3), `TransformerBlock`, then the model. Classes and parameter names are the book's
(`tok_emb`, `pos_emb`, `trf_blocks`, `att.W_query`, `ff`, `norm1`, `final_norm`, `out_head`), the
numerics are GPT-2's, and the `transformers` machinery (KV cache, `generate`, the Trainer's loss,
gradient checkpointing, SDPA) is wired in where the book leaves it out.

This file and `configuration_gpt_scratch.py` are copied next to saved weights, so they import only
installed packages and each other.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .configuration_gpt_scratch import GPTScratchConfig

# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: the argument `generate` passes
# to `forward` and the field of the model outputs. Both names are accepted; outputs use the installed one.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


class LayerNorm(nn.Module):
    """The book's layer normalization: `scale * (x - mean) / sqrt(var + eps) + shift`.

    The biased variance (`unbiased=False`) as in the book and GPT-2; computed by the fused kernel,
    which is the same arithmetic in one pass.
    """

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GPT-2's GELU, the tanh approximation the book writes out:
    `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`, here as one fused kernel."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )
        self.layers[2].residual_projection = True  # scaled at init, see `_init_weights`

    def forward(self, x):
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention from chapter 3, with a KV cache and a choice of kernels.

    `attn_implementation="eager"` is the book's explicit masked softmax; `"sdpa"` calls
    `torch.nn.functional.scaled_dot_product_attention`, which computes the same thing faster.
    The mask is built once per forward by `GPTScratchModel` (True = may attend), not stored as a
    `context_length x context_length` buffer as in the book.
    """

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.config = cfg
        self.layer_idx = layer_idx
        self.d_out = cfg.emb_dim
        self.num_heads = cfg.n_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.W_query = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.out_proj.residual_projection = True  # scaled at init, see `_init_weights`
        self.dropout = nn.Dropout(cfg.drop_rate)

    def forward(self, x, mask=None, cache=None, output_attentions=False):
        b, num_tokens, _ = x.shape
        # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        if cache is not None:  # prepend the cached keys and values of earlier tokens
            keys, values = cache.update(keys, values, self.layer_idx)

        attn_weights = None
        if self.config._attn_implementation == "eager" or output_attentions:
            if mask is None:  # plain causal mask, aligned to the newest tokens
                mask = torch.ones(num_tokens, keys.shape[2], dtype=torch.bool, device=x.device)
                mask = mask.tril(diagonal=keys.shape[2] - num_tokens)
            attn_scores = queries @ keys.transpose(2, 3)
            attn_scores = attn_scores.masked_fill(~mask, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = attn_weights @ values
        else:
            context_vec = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                attn_mask=mask,
                dropout_p=self.dropout.p if self.training else 0.0,
                is_causal=mask is None and num_tokens > 1,
            )

        context_vec = context_vec.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context_vec), attn_weights


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm block: attention and feed-forward, each with a shortcut connection."""

    def __init__(self, cfg, layer_idx=0):
        super().__init__()
        self.att = MultiHeadAttention(cfg, layer_idx)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, eps=cfg.layer_norm_epsilon)
        self.norm2 = LayerNorm(cfg.emb_dim, eps=cfg.layer_norm_epsilon)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, mask=None, cache=None, output_attentions=False):
        shortcut = x
        x, attn_weights = self.att(self.norm1(x), mask, cache, output_attentions)
        x = self.drop_shortcut(x) + shortcut

        shortcut = x
        x = self.drop_shortcut(self.ff(self.norm2(x))) + shortcut
        return x, attn_weights


class GPTScratchPreTrainedModel(PreTrainedModel):
    config_class = GPTScratchConfig
    config: GPTScratchConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True
    _supports_attention_backend = False
    _can_compile_fullgraph = False

    def push_to_hub(self, repo_id, *args, **kwargs):
        """With the package installed, push through `modeling_gpt_scratch.hub`, which adds a model card
        (and `tokenizer=`, `base_model=`, `datasets=`, `metrics=`, `license=`); this file also runs
        copied next to the weights without the package, and then pushes as `transformers` does."""
        try:
            from modeling_gpt_scratch.hub import push_model
        except ImportError:
            return super().push_to_hub(repo_id, *args, **kwargs)
        return push_model(self, repo_id, *args, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls):
        # `MultiHeadAttention` reads `config._attn_implementation` at every call, so switching works.
        return True

    @torch.no_grad()
    def _init_weights(self, module):
        """GPT-2's initialization: N(0, 0.02) everywhere, the projections that feed a shortcut
        scaled by 1/sqrt(2 * n_layers) (two shortcut additions per block), biases 0, LayerNorm 1 and 0.
        (The book keeps PyTorch's defaults; GPT-2's scheme trains deep stacks more stably.)"""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "residual_projection", False):
                std = std / (2 * self.config.n_layers) ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LayerNorm):
            init.ones_(module.scale)
            init.zeros_(module.shift)


class GPTScratchModel(GPTScratchPreTrainedModel):
    """The book's `GPTModel` without its output head: embeddings, blocks, final LayerNorm."""

    def __init__(self, config: GPTScratchConfig):
        super().__init__(config)
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.trf_blocks = nn.ModuleList(
            [TransformerBlock(config, layer_idx=i) for i in range(config.n_layers)]
        )
        self.final_norm = LayerNorm(config.emb_dim, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_emb

    def set_input_embeddings(self, value):
        self.tok_emb = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        if input_ids is not None:
            self._check_token_ids(input_ids)
            inputs_embeds = self.tok_emb(input_ids)
        batch_size, num_tokens = inputs_embeds.shape[:2]

        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if cache is None:
            cache = past_key_values
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(
                "The KV cache (`cache`, formerly `past_key_values`) must be a transformers `Cache` "
                "(e.g. `DynamicCache`), not a tuple."
            )
        past_len = cache.get_seq_length() if cache is not None else 0

        padded = attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask.all())
        if position_ids is None:
            if padded:  # positions follow the mask, so a left-padded row sees what it sees alone
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -num_tokens:]
            else:
                position_ids = torch.arange(past_len, past_len + num_tokens, device=inputs_embeds.device)[
                    None
                ]
            last_position = past_len + num_tokens - 1 if not padded else int(position_ids.max())
        else:
            last_position = int(position_ids.max())
        if last_position >= self.config.context_length:
            raise ValueError(
                f"The sequence is {last_position + 1} tokens long (prompt, cache and new tokens), but this model's "
                f"context_length is {self.config.context_length}: truncate the input to at most "
                f"{self.config.context_length} tokens (or generate fewer new tokens)."
            )

        mask = self._attention_mask(attention_mask, padded, num_tokens, past_len, inputs_embeds.device)

        x = self.drop_emb(inputs_embeds + self.pos_emb(position_ids))
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.trf_blocks:
            if output_hidden_states:
                all_hidden_states += (x,)
            x, attn_weights = block(x, mask=mask, cache=cache, output_attentions=output_attentions)
            if output_attentions:
                all_attentions += (attn_weights,)
        x = self.final_norm(x)
        if output_hidden_states:
            all_hidden_states += (x,)

        return BaseModelOutputWithPast(
            last_hidden_state=x,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            **{CACHE_FIELD: cache if use_cache else None},
        )

    def _check_token_ids(self, input_ids):
        """An id outside the vocabulary would otherwise fail deep inside `nn.Embedding`."""
        if torch.compiler.is_compiling() or input_ids.numel() == 0:
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}): encode the text with "
                f"this model's tokenizer (GPT-2 BPE for vocab_size 50257), or set vocab_size to cover it."
            )

    def _attention_mask(self, attention_mask, padded, num_tokens, past_len, device):
        """A boolean (batch, 1, new tokens, all tokens) mask, True where a token may attend, or None
        when SDPA's own causal mask (or none, for one new token) is exactly right."""
        if attention_mask is not None and attention_mask.ndim == 4:  # prepared by the caller
            return attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        kv_len = past_len + num_tokens
        if padded and attention_mask.shape[-1] != kv_len:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} tokens but the cache and input hold {kv_len}: "
                "pass a mask over all tokens seen so far, as `generate` does."
            )
        if not padded and self.config._attn_implementation != "eager" and (past_len == 0 or num_tokens == 1):
            return None
        mask = torch.ones(num_tokens, kv_len, dtype=torch.bool, device=device).tril(diagonal=past_len)[
            None, None
        ]
        if padded:
            mask = mask & attention_mask[:, None, None, :].bool()
            # A padding token sees nothing; let it see everything instead of dividing 0 by 0 (NaN). Its
            # output is never attended to, pooled or scored.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        return mask


class GPTScratchForCausalLM(GPTScratchPreTrainedModel, GenerationMixin):
    """The book's `GPTModel`: the transformer plus `out_head`, the linear map to vocabulary logits."""

    _tied_weights_keys = {"out_head.weight": "model.tok_emb.weight"}

    def __init__(self, config: GPTScratchConfig):
        super().__init__(config)
        self.model = GPTScratchModel(config)
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.out_head

    def set_output_embeddings(self, new_embeddings):
        self.out_head = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        logits_to_keep=0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`labels` are the inputs themselves (shifted inside, -100 ignored); `kwargs` carries the
        Trainer's `num_items_in_batch`, so the loss is right under gradient accumulation and DDP."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:  # generate needs only the last position
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.out_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )


class GPTScratchForSequenceClassification(GPTScratchPreTrainedModel):
    """Chapter 6's classifier: the transformer with a `num_labels`-way linear head.

    The head is named `score` as in every Hugging Face classifier, so a causal-LM folder loads
    into this class without a size clash on `out_head`; it keeps the book's bias. It reads the
    last *non-padding* token of each row (left or right padding), where the book reads the last
    position even when it is padding; `config.classifier_pooling="last_position"` reads as the book
    (for its chapter 6 checkpoints).
    """

    def __init__(self, config: GPTScratchConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = GPTScratchModel(config)
        self.score = nn.Linear(config.emb_dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        if self.config.classifier_pooling == "last_position" and input_ids is not None:
            input_ids, attention_mask = self._book_padded(input_ids, attention_mask), None
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        batch_size, num_tokens = hidden_states.shape[:2]

        if self.config.classifier_pooling == "last_position":  # the book: `model(x)[:, -1, :]`
            real = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=hidden_states.device)
        elif attention_mask is not None and attention_mask.ndim == 2:
            real = attention_mask[:, -num_tokens:].bool()
        elif input_ids is not None and self.config.pad_token_id is not None:
            # No mask: take padding ids for padding (the book pads with <|endoftext|>, 50256).
            real = input_ids != self.config.pad_token_id
            real[:, 0] |= ~real.any(-1)  # a row of nothing but <|endoftext|> is read at its first token
        else:
            real = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=hidden_states.device)
        positions = torch.arange(num_tokens, device=hidden_states.device)
        last_token = (positions * real.to(hidden_states.device)).argmax(-1)
        pooled = hidden_states[torch.arange(batch_size, device=hidden_states.device), last_token]
        logits = self.score(pooled)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)

        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )

    def _book_padded(self, input_ids, attention_mask):
        """Chapter 6's inputs: each text's tokens (those the mask marks, wherever the padding was)
        cut to `classifier_padded_length` and right-padded to it with `pad_token_id` (the longest
        text of the batch when it is None), attended to without a mask, as the book's model sees them."""
        rows = (
            list(input_ids)
            if attention_mask is None
            else [r[m.bool()] for r, m in zip(input_ids, attention_mask, strict=True)]
        )
        length = self.config.classifier_padded_length or max(len(row) for row in rows)
        padded = input_ids.new_full((len(rows), length), self.config.pad_token_id)
        for i, row in enumerate(rows):
            padded[i, : min(len(row), length)] = row[:length]
        return padded


__all__ = [
    "LayerNorm",
    "GELU",
    "FeedForward",
    "MultiHeadAttention",
    "TransformerBlock",
    "GPTScratchPreTrainedModel",
    "GPTScratchModel",
    "GPTScratchForCausalLM",
    "GPTScratchForSequenceClassification",
]
