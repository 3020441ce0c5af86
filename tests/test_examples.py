"""examples/generate.py, run the way a user runs them: as subprocesses, on a
tiny model saved in a temporary folder. Needs GPT-2's tokenizer (source ../shared/offline/env.sh)."""

import json
import os

import conftest
import pytest
import torch
from conftest import REPO, ok, run_script
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, set_seed

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.tokenization import load_tokenizer

GENERATE = REPO / "examples" / "generate.py"
PROMPT = "Every effort moves you"
CONTEXT = 64


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env["HF_MODULES_CACHE"] = str(tmp_path_factory.mktemp("hf_modules"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run(env, script, *args):
    return run_script(script, *args, env=env)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """A 1.6M-parameter GPT (GPT-2's vocabulary, so the tokenizer fits) saved with its tokenizer, and
    the same model loaded back in this process."""
    path = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    config = GPTScratchConfig(
        emb_dim=32, n_heads=2, n_layers=2, context_length=CONTEXT, drop_rate=0.0, tie_word_embeddings=True
    )
    GPTScratchForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, AutoModelForCausalLM.from_pretrained(path).eval()


def in_process(model, tokenizer, seed=None, **settings):
    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    if seed is not None:
        set_seed(seed)
    with torch.no_grad():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **settings)
    return tokenizer.batch_decode(output)


def test_generate_greedy_streams_prompt_and_matches_generate(env, saved, tokenizer):
    path, model = saved
    out = ok(run(env, GENERATE, path, "--prompt", PROMPT, "--max_new_tokens", 12))
    (expected,) = in_process(model, tokenizer, max_new_tokens=12, do_sample=False)
    assert out.startswith(PROMPT) and len(out.rstrip("\n")) > len(PROMPT)
    assert out == expected + "\n"


def test_generate_sampling_with_seed_is_reproducible(env, saved, tokenizer):
    path, model = saved
    book = [
        "--start_context",
        PROMPT,
        "--max_new_tokens",
        12,
        "--temperature",
        1.4,
        "--top_k",
        25,
        "--seed",
        123,
    ]
    first = ok(run(env, GENERATE, path, *book))
    second = ok(run(env, GENERATE, path, *book))
    assert first == second
    assert first.startswith(PROMPT)
    (expected,) = in_process(
        model, tokenizer, seed=123, max_new_tokens=12, do_sample=True, temperature=1.4, top_k=25
    )
    assert first == expected + "\n"
    (greedy,) = in_process(model, tokenizer, max_new_tokens=12, do_sample=False)
    assert first != greedy + "\n"  # --temperature > 0 samples, as in the book


def test_generate_beams_print_every_sequence_at_the_end(env, saved, tokenizer):
    path, model = saved
    out = ok(run(env, GENERATE, path, "--max_new_tokens", 8, "--num_beams", 3, "--num_return_sequences", 2))
    texts = in_process(model, tokenizer, max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert out == f"--- 1 of 2 ---\n{texts[0]}\n--- 2 of 2 ---\n{texts[1]}\n"
    assert all(text.startswith(PROMPT) for text in texts)


@pytest.mark.slow
def test_generate_hf_gpt2_folder_without_tokenizer(env, tmp_path, tokenizer):
    """A folder with another architecture and no tokenizer files: GPT-2's tokenizer, with a note."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=CONTEXT)).eval()
    model.save_pretrained(tmp_path)
    result = run(env, GENERATE, tmp_path, "--max_new_tokens", 6)
    (expected,) = in_process(model, tokenizer, max_new_tokens=6, do_sample=False, pad_token_id=50256)
    assert ok(result) == expected + "\n"
    assert "no tokenizer files" in result.stderr


def test_generate_help_says_what_happens_to_long_prompts(env):
    out = ok(run(env, GENERATE, "--help"))
    assert "--truncate_prompt" in out and "error" in out


BAD_OPTIONS = {
    "sampling at temperature 0": (["--do_sample", "--temperature", 0], "--temperature 0 means greedy"),
    "negative temperature": (["--temperature", -1], "--temperature must be at least 0"),
    "top_k when greedy": (["--top_k", 5], "--top_k only acts when sampling"),
    "top_p out of range": (["--do_sample", "--top_p", 1.5], "--top_p must be at most 1"),
    "several greedy sequences": (["--num_return_sequences", 2], "greedy decoding gives only 1"),
    "more sequences than beams": (["--num_beams", 2, "--num_return_sequences", 3], "2 beams give at most 2"),
    "no new tokens": (["--max_new_tokens", 0], "--max_new_tokens must be at least 1"),
    "no room for the prompt": (["--max_new_tokens", CONTEXT], f"context of {CONTEXT} tokens"),
    "unknown dtype": (["--dtype", "int8"], "invalid choice: 'int8'"),
    "unknown option": (["--bogus"], "unrecognized arguments: --bogus"),
    "empty prompt": (["--prompt", ""], "--prompt is empty"),
}


def fails_cleanly(result, message):
    conftest.fails_cleanly(result, message)
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_generate_bad_options(env, saved, case):
    args, message = BAD_OPTIONS[case]
    fails_cleanly(run(env, GENERATE, saved[0], *args), message)


def test_generate_missing_or_non_model_folder(env, tmp_path):
    fails_cleanly(run(env, GENERATE, tmp_path / "missing"), "does not exist")
    fails_cleanly(run(env, GENERATE, tmp_path), "no config.json")
    (tmp_path / "config.json").write_text(json.dumps({"hello": "world"}))
    fails_cleanly(run(env, GENERATE, tmp_path), "cannot load a model from")


LONG_PROMPT = " word" * (CONTEXT + 6)


def test_generate_prompt_longer_than_context(env, saved, tokenizer):
    n = len(tokenizer(LONG_PROMPT).input_ids)
    fails_cleanly(
        run(env, GENERATE, saved[0], "--prompt", LONG_PROMPT, "--max_new_tokens", 5),
        f"the prompt is {n} tokens and --max_new_tokens is 5, but the model's context_length is {CONTEXT}",
    )


@pytest.mark.slow
def test_generate_truncate_prompt_keeps_its_end(env, saved, tokenizer):
    path, prompt = saved[0], LONG_PROMPT
    result = run(env, GENERATE, path, "--prompt", prompt, "--max_new_tokens", 5, "--truncate_prompt")
    out = ok(result)
    assert f"keeping its last {CONTEXT - 5}" in result.stderr
    kept = tokenizer.decode(tokenizer(prompt).input_ids[-(CONTEXT - 5) :])
    assert out.startswith(kept) and len(tokenizer(out.rstrip("\n")).input_ids) == CONTEXT


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_generate_cuda_without_gpu(env, saved):
    fails_cleanly(run(env, GENERATE, saved[0], "--device", "cuda"), "sees no CUDA GPU")
