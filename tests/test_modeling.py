"""The model against transformers' GPT2LMHeadModel holding the same weights, and the Hugging Face
behaviours users rely on: generate, the cache, padding, saving, remote code, training."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import random_gpt2
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)
from transformers.generation.streamers import BaseStreamer

from modeling_gpt_scratch import (
    GPT_CONFIG_124M,
    GPTScratchConfig,
    GPTScratchForCausalLM,
    GPTScratchForSequenceClassification,
    GPTScratchModel,
)
from modeling_gpt_scratch.conversion import config_from_gpt2, gpt2_to_scratch_state_dict

VOCAB = 500


def tiny_config(**overrides):
    cfg = dict(
        vocab_size=VOCAB, context_length=64, emb_dim=48, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True
    )
    cfg.update(overrides)
    return GPTScratchConfig(**cfg)


def paired_models(attn="sdpa", tie=True, n_embd=48, n_head=4, n_layer=2, n_positions=64):
    """A random GPT2LMHeadModel and our model holding exactly its weights."""
    special = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = random_gpt2(VOCAB, n_positions, n_embd, n_layer, n_head, **special, tie_word_embeddings=tie)
    if not tie:
        torch.nn.init.normal_(hf.lm_head.weight, std=0.02)
    cfg = config_from_gpt2(hf.config)
    ours = GPTScratchForCausalLM(cfg)
    ours.load_state_dict(gpt2_to_scratch_state_dict(hf.state_dict(), cfg), strict=True)
    hf.set_attn_implementation(attn)
    ours.set_attn_implementation(attn)
    return hf.eval(), ours.eval()


def left_padded(rows, pad=0):
    """Left-pad lists of ids into (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


# ---------------------------------------------------------------- config


def test_config_book_names_and_standard_names():
    cfg = GPTScratchConfig()
    assert cfg.to_book_dict() == GPT_CONFIG_124M
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.max_position_embeddings) == (
        768,
        12,
        12,
        1024,
    )
    assert cfg.tie_word_embeddings is False  # the book's out_head is its own parameter
    assert GPTScratchConfig.from_book_dict(GPT_CONFIG_124M).to_book_dict() == GPT_CONFIG_124M


@pytest.mark.parametrize(
    "preset, params",
    [
        ("GPT_CONFIG_124M", 163_009_536),  # the book's count, untied
        ("gpt2-small", 124_439_808),  # = GPT2LMHeadModel's
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_preset_parameter_counts(preset, params):
    with torch.device("meta"):
        model = GPTScratchForCausalLM(GPTScratchConfig.from_preset(preset))
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(emb_dim=100, n_heads=3), ["emb_dim", "divisible", "n_heads"]),
        (dict(n_layers=0), ["n_layers", "positive"]),
        (dict(vocab_size=-5), ["vocab_size", "positive"]),
        (dict(drop_rate=1.0), ["drop_rate", "[0, 1)"]),
        (dict(drop_rate=-0.1), ["drop_rate", "[0, 1)"]),
    ],
)
def test_invalid_config_says_how_to_fix(kwargs, words):
    with pytest.raises(ValueError) as err:
        GPTScratchConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_unknown_preset():
    with pytest.raises(ValueError, match="gpt2-small"):
        GPTScratchConfig.from_preset("gpt3")


# ---------------------------------------------------------------- parity with GPT-2


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("tie", [True, False])
def test_logits_equal_gpt2(attn, tie):
    hf, ours = paired_models(attn, tie=tie)
    ids = torch.randint(0, VOCAB, (3, 40))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids).logits).abs().max()
    assert diff <= 1e-4


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_gpt2_with_padding(attn):
    hf, ours = paired_models(attn)
    ids = torch.randint(1, VOCAB, (3, 20))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding
    mask[1, 12:] = 0  # right padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # GPT-2 needs them spelled out; ours derives them
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
        mine = ours(ids, attention_mask=mask).logits
        alone = ours(ids[0:1, 7:]).logits
    assert not torch.isnan(mine).any()
    assert ((theirs - mine).abs() * mask[..., None]).max() <= 1e-4
    assert (mine[0, 7:] - alone[0]).abs().max() <= 1e-4  # a left-padded row sees what it sees alone


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_eager_equals_sdpa(attn):
    _, ours = paired_models("eager")
    ids = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        eager = ours(ids).logits
        ours.set_attn_implementation("sdpa")
        assert ours.config._attn_implementation == "sdpa"
        sdpa = ours(ids).logits
    assert (eager - sdpa).abs().max() <= 1e-5


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_greedy_and_beam_search_equal_gpt2(attn):
    hf, ours = paired_models(attn)
    prompt = torch.randint(1, VOCAB, (2, 7))
    for kwargs in (dict(do_sample=False), dict(do_sample=False, num_beams=4, num_return_sequences=2)):
        expected = hf.generate(prompt, max_new_tokens=15, min_new_tokens=15, **kwargs)
        got = ours.generate(prompt, max_new_tokens=15, min_new_tokens=15, **kwargs)
        assert torch.equal(expected, got), kwargs


def test_sampling_equals_gpt2_with_same_seed():
    hf, ours = paired_models()
    prompt = torch.randint(1, VOCAB, (1, 5))
    kwargs = dict(
        do_sample=True, temperature=1.4, top_k=25, top_p=0.9, repetition_penalty=1.3, max_new_tokens=20
    )
    torch.manual_seed(123)
    expected = hf.generate(prompt, **kwargs)
    torch.manual_seed(123)
    got = ours.generate(prompt, **kwargs)
    assert torch.equal(expected, got)


# ---------------------------------------------------------------- cache, batching, streaming


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cached_equals_uncached(attn):
    _, ours = paired_models(attn)
    prompt = torch.randint(1, VOCAB, (2, 6))
    for kwargs in (dict(do_sample=False), dict(num_beams=3, do_sample=False)):
        cached = ours.generate(prompt, max_new_tokens=20, min_new_tokens=20, use_cache=True, **kwargs)
        uncached = ours.generate(prompt, max_new_tokens=20, min_new_tokens=20, use_cache=False, **kwargs)
        assert torch.equal(cached, uncached)

    # step by step: the cache holds exactly what a full forward computes
    ids = torch.randint(1, VOCAB, (2, 12))
    with torch.no_grad():
        full = ours(ids).logits
        out = ours(ids[:, :5], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(5, 12):
            out = ours(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
        chunk = ours(ids[:, 9:], past_key_values=ours(ids[:, :9], use_cache=True).past_key_values).logits
        # transformers >= 5.24 passes the cache as `cache=`; the model takes either name
        renamed = ours(ids[:, 9:], cache=ours(ids[:, :9], use_cache=True).past_key_values).logits
    assert cache.get_seq_length() == 12
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5
    assert (chunk - full[:, 9:]).abs().max() <= 1e-5  # several new tokens on top of a cache
    assert torch.equal(renamed, chunk)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padded_batch_generates_what_each_row_generates_alone(attn):
    _, ours = paired_models(attn)
    rows = [[5, 6, 7, 8, 9, 10, 11, 12], [21, 22, 23], [31, 32, 33, 34, 35]]
    ids, mask = left_padded(rows)
    for kwargs in (dict(do_sample=False), dict(num_beams=2, do_sample=False)):
        batch = ours.generate(ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, **kwargs)
        for i, row in enumerate(rows):
            alone = ours.generate(torch.tensor([row]), max_new_tokens=12, min_new_tokens=12, **kwargs)
            assert batch[i, ids.shape[1] :].tolist() == alone[0, len(row) :].tolist(), (i, kwargs)


class Collect(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.flatten().tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_each_token():
    _, ours = paired_models()
    prompt = torch.randint(1, VOCAB, (1, 4))
    streamer = Collect()
    out = ours.generate(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False, streamer=streamer)
    assert streamer.ended
    assert streamer.chunks[0] == prompt[0].tolist()
    assert sum(streamer.chunks[1:], []) == out[0, 4:].tolist()


# ---------------------------------------------------------------- save, load, remote code


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_round_trip(tmp_path, tie):
    model = GPTScratchForCausalLM(tiny_config(tie_word_embeddings=tie)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gpt_scratch"
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt_scratch.GPTScratchForCausalLM"
    assert (tmp_path / "modeling_gpt_scratch.py").is_file() and (
        tmp_path / "configuration_gpt_scratch.py"
    ).is_file()

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is GPTScratchForCausalLM
    assert (loaded.out_head.weight is loaded.model.tok_emb.weight) == tie
    ids = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert type(AutoConfig.from_pretrained(tmp_path)) is GPTScratchConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is GPTScratchModel


def test_causal_lm_folder_loads_as_classifier(tmp_path):
    GPTScratchForCausalLM(tiny_config()).save_pretrained(tmp_path)
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert type(clf) is GPTScratchForSequenceClassification
    assert clf(torch.randint(0, VOCAB, (2, 5))).logits.shape == (2, 3)


def test_remote_code_without_the_package(tmp_path):
    model = GPTScratchForCausalLM(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)[0].tolist()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_gpt_scratch"] = None  # as if the package were not installed
        try:
            import modeling_gpt_scratch
            raise SystemExit("the package is still importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(model).__name__ == "GPTScratchForCausalLM", type(model)
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        out = model.generate(torch.tensor([{ids[0].tolist()}]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
        print(out[0].tolist())
        clf = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert type(clf).__name__ == "GPTScratchForSequenceClassification"
        """
    )
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected)


# ---------------------------------------------------------------- classification


def test_classifier_pools_last_real_token_left_or_right_padding():
    clf = GPTScratchForSequenceClassification(tiny_config(num_labels=2)).eval()
    row = [11, 12, 13, 14, 15]
    with torch.no_grad():
        alone = clf(torch.tensor([row])).logits
        right = clf(torch.tensor([row + [0, 0, 0]]), attention_mask=torch.tensor([[1] * 5 + [0] * 3])).logits
        ids, mask = left_padded([row, row + [16, 17, 18]])
        left = clf(ids, attention_mask=mask).logits
        # without a mask the padding id (<|endoftext|> in the book) marks the padding
        clf.config.pad_token_id = 0
        right_no_mask = clf(torch.tensor([row + [0, 0, 0]])).logits
    assert (alone - right).abs().max() <= 1e-5
    assert (alone[0] - left[0]).abs().max() <= 1e-5
    assert (alone - right_no_mask).abs().max() <= 1e-5


def test_classifier_matches_gpt2_classifier_on_unpadded_input():
    g2c = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=4, num_labels=3, pad_token_id=0
    )
    hf = GPT2ForSequenceClassification(g2c).eval()
    cfg = config_from_gpt2(g2c, num_labels=3)
    clf = GPTScratchForSequenceClassification(cfg).eval()
    state = gpt2_to_scratch_state_dict(hf.state_dict(), cfg)
    state.pop("out_head.weight")
    state["score.weight"] = hf.score.weight
    state["score.bias"] = torch.zeros(3)
    clf.load_state_dict(state, strict=True)
    ids = torch.randint(1, VOCAB, (2, 9))
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        a, b = hf(ids, labels=labels), clf(ids, labels=labels)
    assert (a.logits - b.logits).abs().max() <= 1e-4
    assert abs(a.loss.item() - b.loss.item()) <= 1e-5


# ---------------------------------------------------------------- training


def test_loss_matches_gpt2_and_uses_num_items_in_batch():
    hf, ours = paired_models()
    ids = torch.randint(0, VOCAB, (2, 16))
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        assert abs(hf(ids, labels=labels).loss.item() - ours(ids, labels=labels).loss.item()) <= 1e-5
        mean = ours(ids, labels=labels).loss
        summed = ours(ids, labels=labels, num_items_in_batch=torch.tensor(1)).loss
        n_items = int((labels[:, 1:] != -100).sum())
    assert abs(summed.item() - mean.item() * n_items) <= 1e-3 * n_items


def test_gradient_checkpointing_gives_the_same_gradients():
    model = GPTScratchForCausalLM(tiny_config(n_layers=3)).train()
    ids = torch.randint(0, VOCAB, (2, 16))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    # transformers >= 5.2x renamed it activation_checkpointing_enable
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert all(block.gradient_checkpointing for block in model.model.trf_blocks)
    checkpointed = grads()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name


def test_gpt2_initialization():
    model = GPTScratchForCausalLM(tiny_config(emb_dim=256, n_layers=8, n_heads=4))
    block = model.model.trf_blocks[0]
    assert abs(block.att.W_query.weight.std().item() - 0.02) < 0.002
    residual_std = 0.02 / (2 * 8) ** 0.5
    assert abs(block.att.out_proj.weight.std().item() - residual_std) < 0.001
    assert abs(block.ff.layers[2].weight.std().item() - residual_std) < 0.001
    assert torch.equal(block.norm1.scale, torch.ones(256)) and torch.equal(
        block.att.out_proj.bias, torch.zeros(256)
    )


def test_trainer_lowers_the_loss(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = GPTScratchForCausalLM(tiny_config(drop_rate=0.0))
    torch.manual_seed(1)
    data = torch.randint(0, VOCAB, (8, 32))
    dataset = Dataset.from_dict({"input_ids": data.tolist(), "labels": data.tolist()})
    with torch.no_grad():
        before = model(data, labels=data).loss.item()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=4,
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    model.eval()
    with torch.no_grad():
        after = model(data, labels=data).loss.item()
    assert after < before - 1.0, (before, after)


# ---------------------------------------------------------------- bad input


def test_too_long_input_names_both_lengths():
    model = GPTScratchForCausalLM(tiny_config(context_length=16))
    with pytest.raises(ValueError) as err:
        model(torch.zeros(1, 17, dtype=torch.long))
    assert "17" in str(err.value) and "context_length is 16" in str(err.value)


def test_generating_past_the_context_is_a_clear_error():
    model = GPTScratchForCausalLM(tiny_config(context_length=16)).eval()
    with pytest.raises(ValueError, match="context_length is 16"):
        model.generate(torch.ones(1, 10, dtype=torch.long), max_new_tokens=10, min_new_tokens=10)


@pytest.mark.parametrize("bad", [-1, VOCAB, VOCAB + 100])
def test_token_ids_outside_the_vocabulary(bad):
    model = GPTScratchForCausalLM(tiny_config())
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError) as err:
        model(ids)
    assert str(bad) in str(err.value) and f"[0, {VOCAB})" in str(err.value)


@pytest.mark.parametrize("shape", [(4,), (1, 2, 4)])
def test_input_ids_of_the_wrong_rank_name_the_shape(shape):
    model = GPTScratchForCausalLM(tiny_config())
    with pytest.raises(ValueError) as err:
        model(torch.ones(shape, dtype=torch.long))
    assert f"input_ids has shape {list(shape)}" in str(err.value) and "(batch, tokens)" in str(err.value)


def test_tuple_cache_is_rejected():
    model = GPTScratchForCausalLM(tiny_config())
    with pytest.raises(TypeError, match="Cache"):
        model(torch.ones(1, 3, dtype=torch.long), past_key_values=((torch.zeros(1), torch.zeros(1)),))


def test_hidden_states_and_attentions():
    model = GPTScratchForCausalLM(tiny_config()).eval()
    out = model(torch.ones(2, 7, dtype=torch.long), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (2, 7, 48)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 7, 7)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 4, 7))
    assert out.attentions[0][0, 0].triu(1).abs().max() == 0  # causal
