"""The model as transformers v5 expects a model to be: attention through `ALL_ATTENTION_FUNCTIONS`,
masks from the masking utilities (padding, 4D masks, packed sequences), static cache and
`torch.compile`, `torch.export`, and the output contracts (`return_dict`, `output_*` from the config,
both names of the cache argument)."""

import pytest
import torch
from transformers import AttentionInterface, StaticCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from modeling_gpt_scratch import (
    GPTScratchConfig,
    GPTScratchForCausalLM,
    GPTScratchForSequenceClassification,
    GPTScratchModel,
)
from modeling_gpt_scratch.modeling_gpt_scratch import CACHE_FIELD

VOCAB = 300
IMPLEMENTATIONS = ["eager", "sdpa", "flex_attention"]


# The `tiny` preset's 4 heads, cut to a 300-token vocabulary (id 0 doubles as end of text and padding),
# context 64, 3 layers 32 wide, with Q/K/V bias, no dropout and its own head (not tied).
TINY = dict(vocab_size=VOCAB, context_length=64, emb_dim=32, n_layers=3, drop_rate=0.0, qkv_bias=True)
TINY.update(tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def tiny_config(**overrides):
    return GPTScratchConfig.from_preset("tiny", **{**TINY, **overrides})


def tiny_model(attn="sdpa", cls=GPTScratchForCausalLM, **overrides):
    model = cls(tiny_config(**overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def padding_mask(ids, pads):
    """An attention mask for `ids` whose row i starts with `pads[i]` padding positions (left padding)."""
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
    return mask


def padded_batch(length, pads, low=1):
    """Random ids, one row of `length` per entry of `pads`, and their left-padding mask."""
    ids = torch.randint(low, VOCAB, (len(pads), length))
    return ids, padding_mask(ids, pads)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


# ---------------------------------------------------------------- the attention interface


def test_a_registered_attention_function_is_called_by_every_layer_with_the_kwargs():
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((module.layer_idx, kwargs.get("request_tag"), query.shape, attention_mask is not None))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("recording_attention", recording_attention)
    AttentionMaskInterface.register("recording_attention", sdpa_mask)  # masks shaped as for sdpa
    model = tiny_model("sdpa")
    ids, mask = padded_batch(9, [4, 0])
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("recording_attention")
        assert model.config._attn_implementation == "recording_attention"
        got = model(ids, attention_mask=mask, request_tag="abc").logits
    assert [c[0] for c in calls] == [0, 1, 2]
    assert all(tag == "abc" and shape == (2, 4, 9, 8) and has_mask for _, tag, shape, has_mask in calls)
    assert torch.equal(got, expected)

    calls.clear()  # through the classifier too, and through generate's forward calls
    clf = tiny_model("recording_attention", cls=GPTScratchForSequenceClassification, num_labels=2)
    clf(ids, request_tag="clf")
    assert [(c[0], c[1]) for c in calls] == [(0, "clf"), (1, "clf"), (2, "clf")]
    calls.clear()
    model.generate(ids[:1], max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert len(calls) == 3 * 3  # 3 layers, prompt + 2 decode steps


def test_implementation_flags():
    flags = GPTScratchForCausalLM
    assert flags._supports_sdpa and flags._supports_flex_attn and flags._supports_attention_backend
    assert flags._can_compile_fullgraph


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
def test_implementations_agree(attn):
    model = tiny_model("eager")
    ids, mask = padded_batch(20, [0, 6], low=0)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        model.set_attn_implementation(attn)
        got = model(ids, attention_mask=mask).logits
    assert (got - expected)[mask.bool()].abs().max() <= 1e-5


# ---------------------------------------------------------------- masks: padding, packing, 4D


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
@pytest.mark.parametrize("training", [False, True])
def test_packed_sequences_equal_separate_sequences(attn, training):
    """Positions restarting at 0 and no mask (DataCollatorWithFlattening, TRL's padding_free) mean
    one sequence per block: no token may attend across a boundary."""
    model = tiny_model(attn).train(training)  # drop_rate 0: training mode changes only the cache default
    lengths = [7, 12, 5]
    rows = [torch.randint(1, VOCAB, (1, n)) for n in lengths]
    packed = torch.cat(rows, dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        got = model(packed, position_ids=position_ids).logits
        expected = torch.cat([model(row).logits for row in rows], dim=1)
        crossing = model(packed).logits  # the same tokens as one sequence
    assert (got - expected).abs().max() <= 1e-5
    assert (crossing - expected).abs().max() > 1e-3  # the test can tell the difference


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_row_may_be_longer_than_the_context(attn):
    """Packing puts several sequences in one row; each must fit the context, the row need not (GPT-2 takes
    such a row too). Without the caller's positions the same row is one sequence, too long: an error."""
    model = tiny_model(attn, context_length=16)
    rows = [torch.randint(1, VOCAB, (1, n)) for n in (16, 9, 14)]
    position_ids = torch.cat([torch.arange(row.shape[1]) for row in rows])[None]
    with torch.no_grad():
        got = model(torch.cat(rows, dim=1), position_ids=position_ids).logits
        expected = torch.cat([model(row).logits for row in rows], dim=1)
    assert got.shape[1] == 39 and (got - expected).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="context_length is 16"):
        model(torch.cat(rows, dim=1))
    with pytest.raises(ValueError, match="context_length is 16"):  # a position past the context
        model(torch.cat(rows, dim=1), position_ids=torch.arange(39)[None])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_custom_4d_mask(attn, dtype):
    """A caller's 4D mask is used as given: here the block-diagonal causal mask of two packed rows,
    as a boolean (True = may attend) or an additive float mask (0 or the dtype's minimum)."""
    model = tiny_model(attn)
    a, b = torch.randint(1, VOCAB, (1, 6)), torch.randint(1, VOCAB, (1, 10))
    allowed = torch.zeros(16, 16, dtype=torch.bool)
    allowed[:6, :6] = torch.ones(6, 6).tril().bool()
    allowed[6:, 6:] = torch.ones(10, 10).tril().bool()
    mask = allowed[None, None]
    if dtype is torch.float32:
        mask = torch.zeros(1, 1, 16, 16).masked_fill(~mask, torch.finfo(torch.float32).min)
    position_ids = torch.cat([torch.arange(6), torch.arange(10)])[None]
    with torch.no_grad():
        got = model(torch.cat([a, b], 1), attention_mask=mask, position_ids=position_ids).logits
        expected = torch.cat([model(a).logits, model(b).logits], 1)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
def test_left_padded_row_computes_what_it_computes_alone(attn):
    model = tiny_model(attn)
    row = torch.randint(1, VOCAB, (1, 9))
    ids = torch.cat([torch.zeros(1, 5, dtype=torch.long), row], 1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits  # no position_ids: they follow the mask
        alone = model(row).logits
    assert not padded.isnan().any()
    assert (padded[:, 5:] - alone).abs().max() <= 1e-5


# ---------------------------------------------------------------- static cache, compile, export


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_static_cache_generates_the_dynamic_cache_tokens(attn):
    model = tiny_model(attn)
    ids, mask = padded_batch(8, [0, 3, 5])  # two left-padded rows
    kwargs = dict(attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    dynamic = model.generate(ids, **kwargs)
    static = model.generate(ids, cache_implementation="static", **kwargs)
    assert torch.equal(dynamic, static)


def test_decode_step_compiles_without_graph_breaks():
    """One token on top of a static cache, through `torch.compile(fullgraph=True)` (which raises on
    any graph break or host sync); the logits are those of a full forward."""
    torch._dynamo.reset()
    model = tiny_model("sdpa")
    ids = torch.randint(1, VOCAB, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = StaticCache(config=model.config, max_cache_len=16)
        steps = [model(ids[:, :8], cache=cache, use_cache=True).logits]
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        for t in range(8, 12):
            out = compiled(
                ids[:, t : t + 1],
                attention_mask=torch.ones(2, t + 1, dtype=torch.long),
                position_ids=torch.full((2, 1), t),
                cache=cache,
                use_cache=True,
            )
            steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5


def test_prefill_compiles_without_graph_breaks():
    """The input checks read tensor values only outside compilation, so a whole forward compiles too."""
    torch._dynamo.reset()
    model = tiny_model("sdpa")
    ids, mask = padded_batch(10, [2, 0])
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        got = compiled(ids, attention_mask=mask, use_cache=False).logits
        expected = model(ids, attention_mask=mask, use_cache=False).logits
    assert (got - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_torch_export_with_and_without_a_mask(attn):
    model = tiny_model(attn)
    ids, mask = padded_batch(10, [3, 0])
    other_mask = padding_mask(ids, [0, 6])
    with torch.no_grad():
        plain = torch.export.export(model, (ids,), kwargs={"use_cache": False}).module()
        assert (plain(ids, use_cache=False).logits - model(ids).logits).abs().max() <= 1e-5
        masked = torch.export.export(
            model, (ids,), kwargs={"attention_mask": mask, "use_cache": False}
        ).module()
        for m in (mask, other_mask):  # the mask is an input of the program, not a constant
            got = masked(ids, attention_mask=m, use_cache=False).logits
            assert (got - model(ids, attention_mask=m).logits).abs().max() <= 1e-5


def test_static_cache_generation_past_the_context_is_a_clear_error():
    model = tiny_model("sdpa", context_length=16)
    with pytest.raises(ValueError, match="context_length is 16"):
        model.generate(
            torch.ones(1, 10, dtype=torch.long),
            max_new_tokens=10,
            min_new_tokens=10,
            cache_implementation="static",
        )


# ---------------------------------------------------------------- output contracts

CLASSES = [GPTScratchModel, GPTScratchForCausalLM, GPTScratchForSequenceClassification]


@pytest.mark.parametrize("cls", CLASSES)
def test_output_flags_from_the_config(cls):
    model = cls(tiny_config(output_hidden_states=True, attn_implementation="eager", num_labels=2)).eval()
    model.config.output_attentions = True
    out = model(torch.randint(1, VOCAB, (2, 7)))
    assert len(out.hidden_states) == 4 and all(h.shape == (2, 7, 32) for h in out.hidden_states)
    assert len(out.attentions) == 3 and all(a.shape == (2, 4, 7, 7) for a in out.attentions)
    model.config.output_attentions = False
    model.config.output_hidden_states = False
    out = model(torch.randint(1, VOCAB, (2, 7)))
    assert out.hidden_states is None and out.attentions is None
    # the keyword wins over the config, and asks sdpa for eager's weights for that call
    model.set_attn_implementation("sdpa")
    out = model(torch.randint(1, VOCAB, (2, 7)), output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 3 and len(out.hidden_states) == 4


def test_last_hidden_state_is_the_final_norm_output():
    model = tiny_model("sdpa", cls=GPTScratchModel)
    ids = torch.randint(1, VOCAB, (1, 5))
    out = model(ids, output_hidden_states=True)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    embeddings = model.tok_emb(ids) + model.pos_emb.weight[:5]
    assert torch.allclose(out.hidden_states[0], embeddings)  # the input of the first block


@pytest.mark.parametrize("cls", CLASSES)
def test_return_dict_false_gives_tuples(cls):
    model = tiny_model("sdpa", cls=cls, num_labels=3)
    ids = torch.randint(1, VOCAB, (2, 6))
    kwargs = (
        {}
        if cls is GPTScratchModel
        else {"labels": ids if cls is GPTScratchForCausalLM else torch.tensor([0, 2])}
    )
    with torch.no_grad():
        as_dict = model(ids, **kwargs)
        as_tuple = model(ids, return_dict=False, **kwargs)
        model.config.return_dict = False
        from_config = model(ids, **kwargs)
    assert type(as_tuple) is tuple and type(from_config) is tuple
    first = as_dict.last_hidden_state if cls is GPTScratchModel else as_dict.loss
    assert torch.equal(as_tuple[0], first) and torch.equal(from_config[0], first)
    if cls is not GPTScratchModel:  # loss, logits, cache
        assert torch.equal(as_tuple[1], as_dict.logits)


def test_both_cache_names():
    """transformers 5.24 passes the cache as `cache`, earlier 5.x as `past_key_values`; the model takes
    either, and its outputs use the installed version's field name."""
    model = tiny_model("sdpa")
    ids = torch.randint(1, VOCAB, (2, 10))
    with torch.no_grad():
        out = model(ids[:, :6], use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        assert cache.get_seq_length() == 6
        old_name = model(ids[:, 6:], past_key_values=cache, use_cache=True)
        cache2 = getattr(model(ids[:, :6], use_cache=True), CACHE_FIELD)
        new_name = model(ids[:, 6:], cache=cache2, use_cache=True)
        full = model(ids).logits
    assert torch.equal(old_name.logits, new_name.logits)
    assert (new_name.logits - full[:, 6:]).abs().max() <= 1e-5
    assert getattr(new_name, CACHE_FIELD).get_seq_length() == 10


def test_past_key_values_warns_as_in_gpt2():
    """From transformers 5.24 its models take the cache as `cache` and warn when it comes as
    `past_key_values` (GPT-2 does); before, `past_key_values` is the name and nothing warns."""
    import warnings

    from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

    ours = tiny_model("sdpa")
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    ).eval()
    ids = torch.randint(1, VOCAB, (2, 5))

    def warnings_of(model, **kwargs):
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            out = model(ids, use_cache=True, **kwargs)
        assert getattr(out, CACHE_FIELD).get_seq_length() == 5
        return [str(w.message) for w in caught if "is deprecated" in str(w.message)]

    for model in (ours, gpt2):
        old = warnings_of(model, past_key_values=DynamicCache(config=model.config))
        assert len(old) == (1 if CACHE_FIELD == "cache" else 0), (type(model).__name__, old)
        assert all("`past_key_values` is deprecated" in message for message in old)
        if CACHE_FIELD == "cache":
            assert warnings_of(model, cache=DynamicCache(config=model.config)) == []
    assert warnings_of(ours) == []


def test_feed_forward_parallel_style_splits_by_place():
    """One plan rule, `trf_blocks.*.ff.layers.*`, reaches the three modules of the book's nn.Sequential; the
    style turns it into column-wise for the first Linear, row-wise for the second, nothing for the GELU."""
    from modeling_gpt_scratch.modeling_gpt_scratch import ALL_PARALLEL_STYLES, FeedForwardParallel

    layers = GPTScratchModel(tiny_config()).trf_blocks[0].ff.layers
    style = ALL_PARALLEL_STYLES["gpt_scratch_ff"]
    assert isinstance(style, FeedForwardParallel)
    assert style._style(layers[0]) is ALL_PARALLEL_STYLES["colwise"]
    assert style._style(layers[2]) is ALL_PARALLEL_STYLES["rowwise"]
    forward = layers[1].forward
    style.install_forward(layers[1], mesh=None)  # the GELU keeps its own forward
    assert layers[1].forward == forward


def test_tensor_parallel_and_pipeline_plans_name_real_modules():
    config = tiny_config()
    tp = type(config).base_model_tp_plan
    block = "trf_blocks.*."
    assert tp == {  # Megatron's split: Q, K, V by output features, out_proj by input features
        "tok_emb": "embedding_rowwise",
        **{f"{block}att.{name}": "colwise" for name in ("W_query", "W_key", "W_value")},
        f"{block}att.out_proj": "rowwise",
        f"{block}ff.layers.*": "gpt_scratch_ff",  # the style splits ff.layers.0 and .2 by place
    }
    model = GPTScratchModel(config)
    names = {n for n, _ in model.named_modules()}
    for pattern in tp:
        assert pattern.replace("*", "0") in names, pattern
    # the book's parameter names stay the state-dict keys
    assert {"trf_blocks.0.ff.layers.0.weight", "trf_blocks.0.ff.layers.2.weight"} <= set(model.state_dict())
    assert GPTScratchForCausalLM(config).tp_plan["out_head"] == "colwise_gather_output"
    assert set(type(config).base_model_pp_plan) == {"tok_emb", "pos_emb", "trf_blocks", "final_norm"}
    for name in type(config).base_model_pp_plan:
        assert name in names


TP_WORKER = """
import json, os, sys
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM
import modeling_gpt_scratch  # registers the Auto classes

folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder, tp_plan="auto").eval()
ids = torch.tensor(json.loads(os.environ["TP_IDS"]))
with torch.no_grad():
    logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
shards = {
    name: (type(p).__name__, tuple(p.to_local().shape) if hasattr(p, "to_local") else tuple(p.shape))
    for name, p in model.named_parameters()
}
model.train()  # drop_rate 0: one training step, each rank's gradients for its own shards
loss = model(ids, labels=ids).loss
loss.backward()
ff = model.model.trf_blocks[1].ff.layers
grads = {i: ff[i].weight.grad.to_local() for i in (0, 2)}
if dist.get_rank() == 0:
    torch.save(
        {
            "world_size": dist.get_world_size(),
            "logits": logits,
            "generated": generated,
            "shards": shards,
            "tied": model.out_head.weight is model.model.tok_emb.weight,
            "loss": loss.detach(),
            "ff_grads": grads,
        },
        out,
    )
dist.barrier()
dist.destroy_process_group()
"""


def test_tensor_parallel_on_two_cpu_processes(tmp_path):
    """`from_pretrained(folder, tp_plan="auto")` in 2 processes over gloo: the token embedding and tied head
    by vocabulary, Q/K/V and the feed-forward's first Linear by output features, out_proj and its second
    Linear by input features; logits, generated tokens, the loss and (rank 0's half of) the feed-forward's
    gradients are those of one process."""
    import json
    import os
    import subprocess
    import sys

    model = GPTScratchForCausalLM(tiny_config(tie_word_embeddings=True)).eval()
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "worker.py").write_text(TP_WORKER)
    ids = torch.randint(1, VOCAB, (2, 9))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TP_IDS": json.dumps(ids.tolist())}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "worker.py"), str(tmp_path / "model"), str(tmp_path / "out.pt")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    assert got["world_size"] == 2
    block = "model.trf_blocks.1."
    expected = {  # (out, in) halved on one side; emb_dim 32, 4 * 32 hidden units, VOCAB 300
        "model.tok_emb.weight": (VOCAB // 2, 32),
        block + "att.W_query.weight": (16, 32),
        block + "att.W_query.bias": (16,),
        block + "att.out_proj.weight": (32, 16),
        block + "att.out_proj.bias": (32,),  # added once, after the all-reduce
        block + "ff.layers.0.weight": (64, 32),
        block + "ff.layers.0.bias": (64,),
        block + "ff.layers.2.weight": (32, 64),
        block + "ff.layers.2.bias": (32,),
    }
    for name, shape in expected.items():
        assert got["shards"][name] == ("DTensor", shape), name
    assert got["tied"]
    assert got["shards"]["model.pos_emb.weight"] == ("Parameter", (64, 32))  # small, replicated
    with torch.no_grad():
        assert (got["logits"] - model(ids).logits).abs().max() <= 1e-5
        expected = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(got["generated"], expected)
    model.train()
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert (got["loss"] - loss.detach()).abs() <= 1e-5
    ff = model.model.trf_blocks[1].ff.layers
    # rank 0 holds the first half of the rows of ff.layers.0, the first half of the columns of ff.layers.2
    assert torch.allclose(got["ff_grads"][0], ff[0].weight.grad[:64], atol=1e-6)
    assert torch.allclose(got["ff_grads"][2], ff[2].weight.grad[:, :64], atol=1e-6)


def test_continuous_batching_generates_what_generate_does():
    """`generate_batch` (paged attention, what `transformers serve --continuous-batching` runs) packs
    the requests into one row with their own positions; the cache is updated through the kwargs."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    model = tiny_model("sdpa")
    rows = [torch.randint(1, VOCAB, (n,)).tolist() for n in (5, 9, 3)]
    config = GenerationConfig(
        max_new_tokens=6, min_new_tokens=6, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    small = ContinuousBatchingConfig(num_blocks=16, block_size=16, max_batch_tokens=64)  # not sized from RAM
    out = model.generate_batch(inputs=rows, generation_config=config, continuous_batching_config=small)
    assert len(out) == 3
    for i, row in enumerate(rows):
        expected = model.generate(torch.tensor([row]), max_new_tokens=6, min_new_tokens=6, do_sample=False)
        assert out[f"req_{i}"].generated_tokens == expected[0, len(row) :].tolist(), i


def test_generate_from_inputs_embeds():
    model = tiny_model("sdpa")
    ids = torch.randint(1, VOCAB, (2, 6))
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    from_ids = model.generate(ids, **kwargs)
    from_embeds = model.generate(inputs_embeds=model.model.tok_emb(ids), **kwargs)
    assert torch.equal(from_embeds, from_ids[:, 6:])  # only the new tokens come back


# ---------------------------------------------------------------- the CPU inference kernel


def ops_called(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


ONEDNN_OP = "mkldnn::_linear_pointwise"


def test_cpu_inference_takes_onednn_and_computes_what_f_linear_does():
    """Without gradients every Linear (attention, feed-forward, head) goes to oneDNN; logits and
    generated tokens equal those of `F.linear`, which `mkldnn.flags(enabled=False)` brings back."""
    model = tiny_model("sdpa")
    ids, mask = padded_batch(10, [0, 4])
    kwargs = dict(attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        ops = ops_called(lambda: model(ids, attention_mask=mask))
        fast, fast_tokens = model(ids, attention_mask=mask).logits, model.generate(ids, **kwargs)
        with torch.backends.mkldnn.flags(enabled=False):
            slow_ops = ops_called(lambda: model(ids, attention_mask=mask))
            slow, slow_tokens = model(ids, attention_mask=mask).logits, model.generate(ids, **kwargs)
    assert ONEDNN_OP in ops and "aten::addmm" not in ops and "aten::mm" not in ops
    assert ONEDNN_OP not in slow_ops and "aten::addmm" in slow_ops
    assert (fast - slow).abs().max() <= 1e-5
    assert torch.equal(fast_tokens, slow_tokens)


def test_training_takes_f_linear_and_gets_gradients():
    model = tiny_model("sdpa").train()
    ids = torch.randint(1, VOCAB, (2, 10))
    ops = ops_called(lambda: model(ids, labels=ids).loss.backward())
    assert ONEDNN_OP not in ops
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_trainable_bias_on_a_frozen_weight_gets_its_gradient():
    """peft's `bias="all"` freezes the weights but trains the biases: the product must keep autograd."""
    model = tiny_model("sdpa").train()
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("bias"))
    ids = torch.randint(1, VOCAB, (2, 10))
    model(ids, labels=ids).loss.backward()
    assert model.model.trf_blocks[0].att.W_query.bias.grad is not None
    assert model.model.trf_blocks[0].att.W_query.bias.grad.abs().sum() > 0


def test_export_keeps_the_portable_product():
    """An exported program may run on other devices: no oneDNN op in its graph."""
    model = tiny_model("sdpa")
    ids = torch.randint(1, VOCAB, (2, 10))
    with torch.no_grad():
        program = torch.export.export(model, (ids,), kwargs={"use_cache": False})
    assert "mkldnn" not in str(program.graph)


@pytest.mark.slow
def test_inductor_compiles_the_onednn_product():
    """Under `torch.compile` the product is an opaque custom op (inductor lowers the aten one only for
    frozen weights); a compiled static-cache generate gives the eager tokens."""
    torch._dynamo.reset()
    model = tiny_model("sdpa")
    ids, mask = padded_batch(8, [0, 3])
    kwargs = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        eager = model.generate(ids, **kwargs)
        compiled_forward = torch.compile(model.forward, fullgraph=True)
        cache = StaticCache(config=model.config, max_cache_len=16)
        ops = ops_called(lambda: compiled_forward(ids, attention_mask=mask, cache=cache, use_cache=True))
        model.forward = compiled_forward
        compiled = model.generate(ids, cache_implementation="static", **kwargs)
    assert "gpt_scratch::onednn_linear" in ops
    assert torch.equal(eager, compiled)
