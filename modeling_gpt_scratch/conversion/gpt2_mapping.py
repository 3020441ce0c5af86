"""Mapping between Hugging Face GPT-2 (`GPT2LMHeadModel`) and this model's names and layouts.

GPT-2 keeps attention and MLP weights in `Conv1D` as `[in, out]` with Q, K and V fused in one
`c_attn`; the book keeps `nn.Linear` weights as `[out, in]` with separate `W_query`, `W_key` and
`W_value` (see the book's chapter 5, `load_weights_into_gpt`). Used by the converters in
`conversion/` and by the parity tests.
"""

import torch
from transformers import GPT2Config

from ..configuration_gpt_scratch import GPTScratchConfig

# Per block: ours -> (GPT-2 name, transpose?) for everything except the fused Q/K/V.
BLOCK_MAP = {
    "norm1.scale": ("ln_1.weight", False),
    "norm1.shift": ("ln_1.bias", False),
    "att.out_proj.weight": ("attn.c_proj.weight", True),
    "att.out_proj.bias": ("attn.c_proj.bias", False),
    "norm2.scale": ("ln_2.weight", False),
    "norm2.shift": ("ln_2.bias", False),
    "ff.layers.0.weight": ("mlp.c_fc.weight", True),
    "ff.layers.0.bias": ("mlp.c_fc.bias", False),
    "ff.layers.2.weight": ("mlp.c_proj.weight", True),
    "ff.layers.2.bias": ("mlp.c_proj.bias", False),
}
# The same read the other way: GPT-2 name -> (ours, transpose?).
BLOCK_MAP_FROM_GPT2 = {gpt2: (ours, transpose) for ours, (gpt2, transpose) in BLOCK_MAP.items()}


def config_from_gpt2(gpt2_config: GPT2Config, **overrides) -> GPTScratchConfig:
    """Our config for a `GPT2Config`; raises ValueError for GPT-2 options this model lacks."""
    unsupported = {
        "n_inner": (None, lambda v: v is None or v == 4 * gpt2_config.n_embd),
        "activation_function": ("gelu_new", lambda v: v in ("gelu_new", "gelu_pytorch_tanh")),
        "scale_attn_weights": (True, lambda v: v is True),
        "scale_attn_by_inverse_layer_idx": (False, lambda v: v is False),
        "reorder_and_upcast_attn": (False, lambda v: v is False),
        "add_cross_attention": (False, lambda v: v is False),
    }
    for key, (expected, ok) in unsupported.items():
        value = getattr(gpt2_config, key, expected)
        if not ok(value):
            raise ValueError(
                f"GPT-2 config has {key}={value!r}; this model implements only {key}={expected!r} "
                "(the architecture of OpenAI's GPT-2 and the book)."
            )
    dropouts = {gpt2_config.embd_pdrop, gpt2_config.attn_pdrop, gpt2_config.resid_pdrop}
    kwargs = dict(
        vocab_size=gpt2_config.vocab_size,
        context_length=gpt2_config.n_positions,
        emb_dim=gpt2_config.n_embd,
        n_heads=gpt2_config.n_head,
        n_layers=gpt2_config.n_layer,
        drop_rate=max(dropouts),
        qkv_bias=True,
        layer_norm_epsilon=gpt2_config.layer_norm_epsilon,
        initializer_range=gpt2_config.initializer_range,
        tie_word_embeddings=getattr(gpt2_config, "tie_word_embeddings", True),
        bos_token_id=gpt2_config.bos_token_id,
        eos_token_id=gpt2_config.eos_token_id,
        pad_token_id=gpt2_config.pad_token_id
        if gpt2_config.pad_token_id is not None
        else gpt2_config.eos_token_id,
    )
    kwargs.update(overrides)
    return GPTScratchConfig(**kwargs)


def gpt2_config_from(config: GPTScratchConfig) -> GPT2Config:
    """The `GPT2Config` of our config. GPT-2 has no switch for Q/K/V bias: without one, the bias is
    stored as zeros, which computes the same thing."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_embd=config.emb_dim,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        activation_function="gelu_new",
        resid_pdrop=config.drop_rate,
        embd_pdrop=config.drop_rate,
        attn_pdrop=config.drop_rate,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def _strip_gpt2_prefix(state_dict):
    """Hub GPT-2 safetensors name `h.0...`, `GPT2LMHeadModel.state_dict()` names `transformer.h.0...`."""
    out = {}
    for key, value in state_dict.items():
        out[key[len("transformer.") :] if key.startswith("transformer.") else key] = value
    return out


def gpt2_to_scratch_state_dict(gpt2_state_dict, config: GPTScratchConfig, prefix="model."):
    """Our `GPTScratchForCausalLM` state dict from a GPT-2 one (either naming). Raises KeyError
    naming a missing tensor and ValueError for a tensor of the wrong shape."""
    sd = _strip_gpt2_prefix(gpt2_state_dict)
    d, n = config.emb_dim, config.n_layers

    def take(name, shape):
        if name not in sd:
            raise KeyError(f"GPT-2 checkpoint has no tensor `{name}` (expected shape {list(shape)}).")
        tensor = sd[name]
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"GPT-2 tensor `{name}` has shape {list(tensor.shape)}, expected {list(shape)} for this config."
            )
        return tensor

    out = {
        f"{prefix}tok_emb.weight": take("wte.weight", (config.vocab_size, d)),
        f"{prefix}pos_emb.weight": take("wpe.weight", (config.context_length, d)),
        f"{prefix}final_norm.scale": take("ln_f.weight", (d,)),
        f"{prefix}final_norm.shift": take("ln_f.bias", (d,)),
    }
    shapes = {
        "ln_1.weight": (d,), "ln_1.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
        "mlp.c_fc.weight": (d, 4 * d), "mlp.c_fc.bias": (4 * d,),
        "mlp.c_proj.weight": (4 * d, d), "mlp.c_proj.bias": (d,),
    }  # fmt: skip
    for i in range(n):
        src, dst = f"h.{i}.", f"{prefix}trf_blocks.{i}."
        q_w, k_w, v_w = take(src + "attn.c_attn.weight", (d, 3 * d)).split(d, dim=1)
        q_b, k_b, v_b = take(src + "attn.c_attn.bias", (3 * d,)).split(d, dim=0)
        for name, w, b in (("W_query", q_w, q_b), ("W_key", k_w, k_b), ("W_value", v_w, v_b)):
            out[f"{dst}att.{name}.weight"] = w.T.contiguous()
            if config.qkv_bias:
                out[f"{dst}att.{name}.bias"] = b.contiguous()
            elif torch.count_nonzero(b):
                raise ValueError(
                    f"GPT-2 tensor `{src}attn.c_attn.bias` is not zero but the config has qkv_bias=False; "
                    "convert with qkv_bias=True."
                )
        for ours, (theirs, transpose) in BLOCK_MAP.items():
            tensor = take(src + theirs, shapes[theirs])
            out[dst + ours] = tensor.T.contiguous() if transpose else tensor
    head = sd.get("lm_head.weight")
    if config.tie_word_embeddings or head is None:
        out["out_head.weight"] = out[f"{prefix}tok_emb.weight"]
    else:
        out["out_head.weight"] = take("lm_head.weight", (config.vocab_size, d))
    return out


def scratch_to_gpt2_state_dict(state_dict, config: GPTScratchConfig, prefix="model."):
    """A `GPT2LMHeadModel` state dict (with `transformer.` prefix) from ours."""
    d = config.emb_dim
    sd = state_dict
    out = {
        "transformer.wte.weight": sd[f"{prefix}tok_emb.weight"],
        "transformer.wpe.weight": sd[f"{prefix}pos_emb.weight"],
        "transformer.ln_f.weight": sd[f"{prefix}final_norm.scale"],
        "transformer.ln_f.bias": sd[f"{prefix}final_norm.shift"],
    }
    for i in range(config.n_layers):
        src, dst = f"{prefix}trf_blocks.{i}.", f"transformer.h.{i}."
        ws = [sd[f"{src}att.{n}.weight"].T for n in ("W_query", "W_key", "W_value")]
        out[dst + "attn.c_attn.weight"] = torch.cat(ws, dim=1).contiguous()
        if config.qkv_bias:
            bs = [sd[f"{src}att.{n}.bias"] for n in ("W_query", "W_key", "W_value")]
        else:
            bs = [torch.zeros(d, dtype=ws[0].dtype, device=ws[0].device)] * 3
        out[dst + "attn.c_attn.bias"] = torch.cat(bs)
        for ours, (theirs, transpose) in BLOCK_MAP.items():
            tensor = sd[src + ours]
            out[dst + theirs] = tensor.T.contiguous() if transpose else tensor
    out["lm_head.weight"] = sd.get("out_head.weight", sd[f"{prefix}tok_emb.weight"])
    return out
