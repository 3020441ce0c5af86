"""The GPT from *Build a Large Language Model (From Scratch)* (S. Raschka), chapters 3-4, as a
Hugging Face `transformers` model.

It reads top to bottom like chapter 4: `LayerNorm`, `GELU`, `Linear` (`nn.Linear` with a faster CPU
inference kernel), `FeedForward`, the attention
(chapter 3: `eager_attention`, the book's masked softmax, and `MultiHeadAttention`), `TransformerBlock`,
then the model. Classes and parameter names are the book's (`tok_emb`, `pos_emb`, `trf_blocks`,
`att.W_query`, `ff`, `norm1`, `final_norm`, `out_head`), the numerics are GPT-2's, and the
`transformers` machinery is wired in where the book leaves it out: the attention interface (SDPA,
flex, flash, paged, or any registered function), the masking utilities (padding, packed sequences,
4D masks), the KV caches (dynamic, static, paged), `generate`, `torch.compile` / `torch.export`,
the Trainer's loss, gradient checkpointing, and tensor parallelism.

This file and `configuration_gpt_scratch.py` are copied next to saved weights, so they import only
installed packages and each other.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.distributed.tensor_parallel import ALL_PARALLEL_STYLES, TensorParallelLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

try:  # the mask type of flex attention, absent from some torch builds
    from torch.nn.attention.flex_attention import BlockMask
except ImportError:  # pragma: no cover
    BlockMask = type("BlockMask", (), {})

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


ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch < 2.6 has no such check


def _onednn_inference(x, weight, bias):
    """Whether `Linear` may take oneDNN's kernel for this product (see `Linear`)."""
    return (
        ONEDNN
        and x.device.type == weight.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and _needs_grad(x, weight, bias))
        and type(weight) in (nn.Parameter, torch.Tensor)  # not a DTensor shard
        and weight.is_contiguous()
        and torch.backends.mkldnn.enabled
        and not _is_exporting()
    )


def _needs_grad(x, weight, bias):
    """A trainable bias alone (peft's `bias="all"` on frozen weights) also needs the autograd path."""
    return x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)


if ONEDNN and not hasattr(torch.ops.gpt_scratch, "onednn_linear"):  # once, if this file is loaded twice

    @torch.library.custom_op("gpt_scratch::onednn_linear", mutates_args=())
    def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The oneDNN product as an opaque op for `torch.compile`."""
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @_onednn_linear.register_fake
    def _(x, weight, bias):
        return x.new_empty((*x.shape[:-1], weight.shape[0]))


class Linear(nn.Linear):
    """`nn.Linear`, the same parameters and state dict, with a faster kernel for inference on the CPU.

    Without gradients, a float32 product on the CPU goes to oneDNN's matmul instead of the BLAS one
    `F.linear` calls. Same arithmetic, other kernel: on the benchmark machine (AMD EPYC, 2 threads) it
    is 1.3-1.9x faster for the one-token products of cached generation and 1.1-1.5x for whole sequences
    (`benchmarks/bench_linear_kernel.py`), with the book's contiguous `[out, in]` weights. oneDNN's op has no
    backward, so training takes `F.linear`; so do tensor-parallel and FSDP shards (DTensors), other
    devices and dtypes, `torch.export` (the exported graph stays portable), and
    `torch.backends.mkldnn.flags(enabled=False)`.
    """

    def forward(self, x):
        if not _onednn_inference(x, self.weight, self.bias):
            return F.linear(x, self.weight, self.bias)
        if torch.compiler.is_compiling():  # inductor lowers the aten op only for frozen weights
            return torch.ops.gpt_scratch.onednn_linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )
        self.layers[2].residual_projection = True  # scaled at init, see `_init_weights`

    def forward(self, x):
        return self.layers(x)


class FeedForwardParallel(TensorParallelLayer):
    """Tensor parallelism for `FeedForward.layers`, the tensor-parallel plan's style "gpt_scratch_ff".

    transformers matches plan rules with layer numbers replaced by `*`, so the book's `ff.layers.0` and
    `ff.layers.2` meet one rule, `ff.layers.*`. This style splits each Linear by its place, as Megatron
    does: the first by output features ("colwise"), the one that feeds the shortcut by input features
    ("rowwise", one all-reduce); the GELU between them works on each rank's slice as it is.
    """

    @staticmethod
    def _style(module):
        return ALL_PARALLEL_STYLES["rowwise" if getattr(module, "residual_projection", False) else "colwise"]

    def validate_param(self, module, *args, **kwargs):
        return self._style(module).validate_param(module, *args, **kwargs)

    def shard_param(self, module, *args, **kwargs):
        return self._style(module).shard_param(module, *args, **kwargs)

    def install_forward(self, module, *args, **kwargs):
        if isinstance(module, nn.Linear):
            return self._style(module).install_forward(module, *args, **kwargs)


ALL_PARALLEL_STYLES.register("gpt_scratch_ff", FeedForwardParallel())


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """The book's attention (chapter 3): scaled dot products, a causal mask, softmax, dropout.

    `query`, `key`, `value` are (batch, heads, tokens, head_dim). The mask comes from transformers'
    masking utilities: an additive float mask (0 = may attend, the dtype's minimum = may not), or a
    boolean one (True = may attend) when a caller passes its own; `None` means plain causal, aligned to
    the newest tokens. The minimum stands in for the book's `-inf`: a row with nothing to attend to
    (left padding) then gets uniform weights instead of NaN. Returns the context vectors as
    (batch, tokens, heads, head_dim), as every function in `ALL_ATTENTION_FUNCTIONS` does, and the
    attention weights.
    """
    attn_scores = query @ key.transpose(2, 3)
    if attention_mask is None:
        num_queries, num_keys = query.shape[2], key.shape[2]
        attention_mask = torch.ones(num_queries, num_keys, dtype=torch.bool, device=query.device)
        attention_mask = attention_mask.tril(diagonal=num_keys - num_queries)
    if attention_mask.dtype == torch.bool:
        attn_scores = attn_scores.masked_fill(~attention_mask, torch.finfo(attn_scores.dtype).min)
    else:
        attn_scores = attn_scores + attention_mask
    attn_weights = torch.softmax(attn_scores * scaling, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    context_vec = attn_weights @ value
    return context_vec.transpose(1, 2), attn_weights


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention from chapter 3, with a KV cache and any attention kernel.

    The projections are the book's; the attention itself is looked up by name in transformers'
    `ALL_ATTENTION_FUNCTIONS` (`"sdpa"`, `"flex_attention"`, `"flash_attention_2"`, or any function
    registered with `AttentionInterface`, as vLLM's and SGLang's Transformers backends do), with
    `eager_attention` above, the book's masked softmax, for `"eager"`. The causal mask is built once per
    forward by `GPTScratchModel`, not stored as a `context_length x context_length` buffer as in the book.
    """

    is_causal = True  # read by the sdpa / flash / flex functions

    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.config = cfg
        self.layer_idx = layer_idx
        self.d_out = cfg.emb_dim
        self.num_heads = cfg.n_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.scaling = self.head_dim**-0.5
        self.W_query = Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_key = Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_value = Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = Linear(cfg.emb_dim, cfg.emb_dim)
        self.out_proj.residual_projection = True  # scaled at init, see `_init_weights`
        self.dropout = nn.Dropout(cfg.drop_rate)

    def forward(self, x, attention_mask=None, kv_cache=None, **kwargs):
        b, num_tokens, _ = x.shape
        # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim); -1 heads under tensor parallelism
        shape = (b, num_tokens, -1, self.head_dim)
        queries = self.W_query(x).view(shape).transpose(1, 2)
        keys = self.W_key(x).view(shape).transpose(1, 2)
        values = self.W_value(x).view(shape).transpose(1, 2)

        if kv_cache is not None:  # add this step's keys and values to the cache, get all of them back
            keys, values = kv_cache.update(keys, values, self.layer_idx, kwargs=kwargs)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention)
        if kwargs.get("output_attentions") and not isinstance(attention_mask, BlockMask):
            attention = eager_attention  # only the explicit softmax has weights to return
        context_vec, attn_weights = attention(
            self,
            queries,
            keys,
            values,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        context_vec = context_vec.reshape(b, num_tokens, -1)
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

    def forward(self, x, attention_mask=None, kv_cache=None, **kwargs):
        shortcut = x
        x, _ = self.att(self.norm1(x), attention_mask=attention_mask, kv_cache=kv_cache, **kwargs)
        x = self.drop_shortcut(x) + shortcut

        shortcut = x
        x = self.drop_shortcut(self.ff(self.norm2(x))) + shortcut
        return x


class GPTScratchPreTrainedModel(PreTrainedModel):
    config_class = GPTScratchConfig
    config: GPTScratchConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    # Attention goes through `ALL_ATTENTION_FUNCTIONS` and masks through `create_causal_mask`, so every
    # kernel transformers knows works, and the forward has no host syncs or data-dependent branches.
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # `output_hidden_states` / `output_attentions` (keyword or config) are collected by hooks on these.
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": MultiHeadAttention}

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

    @capture_outputs
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`kwargs` (e.g. `output_attentions`, or what a registered attention function needs) reach
        every attention call. The KV cache may be passed as `cache` (transformers >= 5.24) or
        `past_key_values` (earlier); outputs name it as the installed version does."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        if input_ids is not None and input_ids.ndim != 2:
            raise ValueError(
                f"input_ids has shape {list(input_ids.shape)}; expected (batch, tokens): add the batch "
                "dimension, e.g. `input_ids.unsqueeze(0)` for one sequence."
            )
        if inputs_embeds is not None and inputs_embeds.ndim != 3:
            raise ValueError(
                f"inputs_embeds has shape {list(inputs_embeds.shape)}; expected (batch, tokens, {self.config.emb_dim})."
            )
        num_tokens = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if past_key_values is not None and CACHE_FIELD == "cache" and not torch.compiler.is_compiling():
            # as transformers' own models do from 5.24 on (its common tests check for this warning)
            warnings.warn(
                "`past_key_values` is deprecated from transformers 5.24: pass `cache`.",
                FutureWarning,
                stacklevel=2,
            )
        if cache is None:
            cache = past_key_values
        if isinstance(cache, (tuple, list)):
            raise TypeError(
                "The KV cache (`cache`, formerly `past_key_values`) must be a transformers `Cache` "
                "(e.g. `DynamicCache`), not a tuple."
            )
        # Continuous batching's paged cache holds many requests in one row, with their own positions and
        # mask. Before transformers 5.24 it is meant for the attention function, which updates it itself.
        paged = cache is not None and not isinstance(cache, Cache)
        if paged and CACHE_FIELD == "past_key_values":
            kwargs["cache"], cache = cache, None
        new_cache = use_cache and cache is None and not paged
        if new_cache:
            cache = DynamicCache(config=self.config)
        # An int, or a tensor for static caches (None for a paged cache)
        past_len = None if paged else cache.get_seq_length() if cache is not None else 0

        positions_given = position_ids is not None
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2:
                # Positions follow the mask, so a left-padded row computes what it computes alone.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -num_tokens:]
            else:
                position_ids = (
                    torch.arange(num_tokens, device=device) + (past_len if past_len is not None else 0)
                )[None]
        self._check_inputs(input_ids, num_tokens, attention_mask, position_ids, past_len, positions_given)
        if input_ids is not None:
            inputs_embeds = self.tok_emb(input_ids)

        # Causal + padding, or a caller's 4D mask, or per-sequence blocks for packed sequences (positions
        # restarting at 0, no mask), in the form the attention implementation wants. A cache made just
        # now is empty, so the mask is built as without one; that lets packing be detected at inference.
        mask = create_causal_mask(
            self.config,
            inputs_embeds,
            attention_mask,
            None if new_cache else cache,
            position_ids=position_ids,
        )

        x = self.drop_emb(inputs_embeds + self.pos_emb(position_ids))
        for block in self.trf_blocks:
            # position_ids also go down: flash attention reads packed-sequence boundaries from them
            x = block(x, attention_mask=mask, kv_cache=cache, position_ids=position_ids, **kwargs)
        x = self.final_norm(x)

        return BaseModelOutputWithPast(last_hidden_state=x, **{CACHE_FIELD: cache if use_cache else None})

    def _check_inputs(self, input_ids, num_tokens, attention_mask, position_ids, past_len, positions_given):
        """Bad input gets a clear `ValueError` here instead of an index error deep inside `nn.Embedding`
        (or a device-side assert on a GPU), without stalling a GPU at every decode step:

        - Lengths are first checked from shapes, which costs nothing and also holds under compilation:
          the tokens of a 2D mask (what `generate` passes), or cache length + new tokens when the cache
          length is a Python int (the dynamic cache). Not for packed sequences (the caller's positions,
          no cache, no mask): their positions restart, so one row may hold more tokens than the context.
        - Values (token ids inside the vocabulary, positions below `context_length`) need the tensors'
          contents on the host. On an accelerator that is a sync, so they are read only for inputs of
          more than one token per row: once per prompt, never per decode step (the tokens `generate`
          feeds back come from this model's own head). On the CPU reading a value costs microseconds, so
          every eager call is checked (this catches a static cache run past the context). Never under
          `torch.compile` / `torch.export`, where reading a value would break the graph.
        """
        if past_len is None:  # a paged cache: many requests in one row
            total = 0
        elif attention_mask is not None and attention_mask.ndim == 2:
            total = attention_mask.shape[-1]
        elif positions_given and isinstance(past_len, int) and past_len == 0:
            total = 0
        else:
            total = past_len + num_tokens if isinstance(past_len, int) else 0
        if total > self.config.context_length:
            self._too_long(total)
        on_cpu = position_ids.device.type == "cpu"
        if torch.compiler.is_compiling() or not (num_tokens > 1 or on_cpu) or position_ids.numel() == 0:
            return
        if input_ids is not None:
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}): encode the text "
                    f"with this model's tokenizer (GPT-2 BPE for vocab_size 50257), or set vocab_size to cover it."
                )
        if (last := int(position_ids.max())) >= self.config.context_length:
            self._too_long(last + 1)

    def _too_long(self, length):
        raise ValueError(
            f"The sequence is {length} tokens long (prompt, cache and new tokens), but this model's "
            f"context_length is {self.config.context_length}: truncate the input to at most "
            f"{self.config.context_length} tokens (or generate fewer new tokens)."
        )


class GPTScratchForCausalLM(GPTScratchPreTrainedModel, GenerationMixin):
    """The book's `GPTModel`: the transformer plus `out_head`, the linear map to vocabulary logits."""

    _tied_weights_keys = {"out_head.weight": "model.tok_emb.weight"}
    # Under tensor parallelism the head is split by vocabulary like the token embedding it may be tied to,
    # and its logits gathered.
    _tp_plan = {"out_head": "colwise_gather_output"}

    def __init__(self, config: GPTScratchConfig):
        super().__init__(config)
        self.model = GPTScratchModel(config)
        self.out_head = Linear(config.emb_dim, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.out_head

    def set_output_embeddings(self, new_embeddings):
        self.out_head = new_embeddings

    @can_return_tuple
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
        logits_to_keep=0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`labels` are the inputs themselves (shifted inside, -100 ignored); `kwargs` carries the
        Trainer's `num_items_in_batch`, so the loss is right under gradient accumulation and DDP, and
        anything the attention function needs."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
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
        self.score = Linear(config.emb_dim, config.num_labels)
        self.post_init()

    @can_return_tuple
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
            return_dict=True,
            **kwargs,
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
    "Linear",
    "FeedForward",
    "FeedForwardParallel",
    "MultiHeadAttention",
    "TransformerBlock",
    "GPTScratchPreTrainedModel",
    "GPTScratchModel",
    "GPTScratchForCausalLM",
    "GPTScratchForSequenceClassification",
]
