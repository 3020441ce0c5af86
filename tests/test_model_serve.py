"""A saved folder served over an OpenAI-compatible HTTP API by transformers' own server
(`transformers serve`, through examples/serve.py), asked by real HTTP requests on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
from modeling_gpt_scratch.tokenization import load_tokenizer

pytest.importorskip("fastapi", reason="serving needs the `serve` extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="serving needs the `serve` extra: pip install -e '.[serve]'")

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, payload=None, timeout=60):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_transformers_serve_answers_openai_requests(tmp_path):
    folder = tmp_path / "model"
    tokenizer = load_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPTScratchConfig.from_preset("tiny", n_layers=2, emb_dim=64, n_heads=4, drop_rate=0.0)
    model = GPTScratchForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    def greedy(prompt_ids, n=6):
        ids = torch.tensor([prompt_ids])
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return tokenizer.decode(out[0, ids.shape[1] :])

    expected_completion = greedy(tokenizer("The book says").input_ids)
    messages = [{"role": "user", "content": "Hello"}]
    chat_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat_text == "user: Hello\nassistant:"
    expected_chat = greedy(tokenizer(chat_text).input_ids)

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "serve.py"), str(folder), "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu", "--dtype", "float32"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if call(f"{base}/health", timeout=5)["status"] == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 120 s"
            time.sleep(1)

        models = call(f"{base}/v1/models")
        assert [m["id"] for m in models["data"]] == [str(folder)]
        common = {"model": str(folder), "max_tokens": 6, "temperature": 0}
        completion = call(f"{base}/v1/completions", {**common, "prompt": "The book says"})
        assert completion["choices"][0]["text"] == expected_completion
        assert completion["usage"]["completion_tokens"] == 6
        chat = call(f"{base}/v1/chat/completions", {**common, "messages": messages})
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["message"]["content"] == expected_chat
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)
        log.close()
