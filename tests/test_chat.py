"""Chat with an instruction-tuned folder: the book's Alpaca prompt as a chat template, `pipeline` with
messages, examples/chat.py answering a line from standard input, and finetune_instruction.py saving
the template with the tokenizer."""

import json
import os

import pytest
import torch
from conftest import REPO, ok, run_script, small_gpt
from transformers import AutoTokenizer, pipeline

from modeling_gpt_scratch import GPTScratchForCausalLM
from modeling_gpt_scratch.instruction import (
    ALPACA_CHAT_TEMPLATE,
    ALPACA_PREAMBLE,
    add_chat_template,
    format_example,
    format_input,
)
from modeling_gpt_scratch.tokenization import load_tokenizer

CHAT = REPO / "examples" / "chat.py"
HEADER = "\n\n### Response:\n"


@pytest.fixture(scope="module")
def tokenizer():
    return add_chat_template(load_tokenizer())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    """A tiny random model saved with its tokenizer and the chat template, as the fine-tuning scripts save."""
    path = tmp_path_factory.mktemp("chat") / "model"
    small_gpt(seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def greedy(folder, prompt, n):
    """The reference answer: the model's greedy continuation of `prompt`, decoded."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = GPTScratchForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=50256)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


# ----------------------------------------------------------------------------------- the template
@pytest.mark.parametrize("content", ["Name three primary colors.", "Rewrite: 'it is hot'\n\nin French"])
def test_one_message_renders_the_books_prompt(tokenizer, content):
    messages = [{"role": "user", "content": content}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == format_input({"instruction": content, "input": ""}) + HEADER
    # what the model was trained on (format_example) starts with exactly this prompt
    assert format_example({"instruction": content, "input": "", "output": "Red."}) == prompt + "Red."
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert without == format_input({"instruction": content, "input": ""})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == tokenizer(prompt)["input_ids"]  # no special tokens added around it


def test_system_message_and_turns(tokenizer):
    assert format_input({"instruction": "x", "input": ""}).startswith(ALPACA_PREAMBLE + "\n\n")
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "A color?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "You answer in one word.\n\n### Instruction:\nA color?\n\n### Response:\nBlue."
        "\n\n### Instruction:\nAnother?\n\n### Response:\n"
    )
    with pytest.raises(Exception, match="system, user and assistant"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_template_is_saved_with_the_tokenizer(folder):
    assert AutoTokenizer.from_pretrained(folder).chat_template == ALPACA_CHAT_TEMPLATE


# ------------------------------------------------------------------------------- using the folder
def test_pipeline_answers_a_list_of_messages(folder, one_thread):
    generator = pipeline("text-generation", model=str(folder))
    messages = [{"role": "user", "content": "Name three primary colors."}]
    result = generator(messages, max_new_tokens=6, do_sample=False)
    conversation = result[0]["generated_text"]
    assert conversation[:1] == messages and conversation[-1]["role"] == "assistant"
    prompt = format_input({"instruction": messages[0]["content"], "input": ""}) + HEADER
    assert conversation[-1]["content"] == greedy(folder, prompt, 6)
    assert conversation[-1]["content"].strip()


def test_chat_script_answers_a_line_from_stdin(folder, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    args = [folder, "--max_new_tokens", "5", "--device", "cpu"]
    result = run_script(
        CHAT, *args, env=env, timeout=120, input="Name three primary colors.\n\nWhat is 2 + 2?\n"
    )
    out = ok(result)
    replies = out.split("Model: ")[1:]
    assert len(replies) == 2  # the empty line is skipped; end of input ends the chat
    prompt = format_input({"instruction": "Name three primary colors.", "input": ""}) + HEADER
    assert replies[0] == greedy(folder, prompt, 5) + "\n"  # streamed, then the end of the line


def test_chat_script_bad_folder_is_one_error_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = run_script(CHAT, tmp_path / "missing", env=env, timeout=120)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr


def test_finetune_instruction_saves_the_template(shared_data, tmp_path):
    out = tmp_path / "sft"
    args = ["--config_name", "tiny", "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2"]
    args += ["--max_train_samples", "8", "--max_eval_samples", "2", "--max_test_samples", "0"]
    args += ["--max_steps", "1", "--per_device_train_batch_size", "4", "--disable_tqdm", "true"]
    args += ["--eval_strategy", "no", "--output_dir", out]
    args += ["--train_file", shared_data / "instruction" / "instruction-data.json"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    ok(run_script(REPO / "examples" / "finetune_instruction.py", *args, env=env))
    assert AutoTokenizer.from_pretrained(out).chat_template == ALPACA_CHAT_TEMPLATE
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt_scratch"
