"""examples/evaluate_responses.py against small HTTP servers on 127.0.0.1 that speak Ollama's /api/chat
(streamed NDJSON, as the book reads it) and the OpenAI chat-completions API, and against a local model."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import cli_error, load_example

from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.instruction import judge_prompt

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "evaluate_responses.py"


@pytest.fixture(scope="module")
def script():
    return load_example("evaluate_responses")


def entry(response):
    return {"instruction": "Name a primary color.", "input": "", "output": "Red.", "model_response": response}


class FakeJudge:
    """A server whose answer depends on the model response inside the prompt:
    "score N" -> N; "chatty" -> words; "flaky" -> HTTP 500 once, then 70; "broken" -> 500 always;
    "slow" -> answers after 1 s (past the client's timeout); "trickle" -> blank lines, a few a second,
    for 4 s; "null" -> an answer whose content is null, "number" -> one whose content is the number 7."""

    def __init__(self, openai=False):
        self.requests = []
        self.calls = {}
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append((self.path, dict(self.headers), body))
                prompt = body["messages"][0]["content"]
                kind = prompt.split("score the model response `")[1].split("`")[0]
                judge.calls[kind] = judge.calls.get(kind, 0) + 1
                if kind == "slow":
                    time.sleep(1.0)
                if kind == "trickle":
                    self.send_response(200)
                    self.end_headers()
                    for _ in range(20):
                        self.wfile.write(b"\n")
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                if kind == "broken" or (kind == "flaky" and judge.calls[kind] == 1):
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"internal error")
                    return
                if judge.status != 200:
                    self.send_response(judge.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model \\"llama3\\" not found, try pulling it first"}')
                    return
                answers = {"flaky": "70", "chatty": "This response is quite good!", "null": None, "number": 7}
                answer = answers.get(kind, kind.split()[-1])
                self.send_response(200)
                if openai:
                    payload = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
                    data = json.dumps(payload).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                parts = [answer[:1], answer[1:], ""] if isinstance(answer, str) else [answer, "", ""]
                for i, part in enumerate(parts):  # streamed a piece at a time
                    line = {
                        "model": body["model"],
                        "message": {"role": "assistant", "content": part},
                        "done": i == 2,
                    }
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()

        self.status = 200
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ollama():
    server = FakeJudge()
    yield server
    server.close()


@pytest.fixture
def openai():
    server = FakeJudge(openai=True)
    yield server
    server.close()


def write(tmp_path, responses):
    path = tmp_path / "responses.json"
    path.write_text(json.dumps([entry(r) for r in responses]))
    return path


def test_parse_score(script):
    assert [script.parse_score(a) for a in ("85", " 85\n", "85.", "Score: 85", "85/100", "100", "0")] == [
        85, 85, 85, 85, 85, 100, 0,
    ]  # fmt: skip
    for answer in ("", "eighty", "101", "-5", "85 because it is good", "I'd say 85", "8 5"):
        assert script.parse_score(answer) is None, answer


def test_ollama_scores_retries_and_counts(script, ollama, tmp_path, capsys):
    responses = ["score 85", "chatty", "flaky", "score 60", "slow", "broken"]
    path = write(tmp_path, responses)
    out = tmp_path / "scored.json"
    script.main(["--input_file", str(path), "--output_file", str(out), "--ollama_url", ollama.url,
                 "--timeout", "0.5", "--retries", "1", "--retry_delay", "0"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert "Number of scores: 3 of 6" in stdout
    assert "Average score: 71.67" in stdout  # (85 + 70 + 60) / 3
    assert "Answers that are not a score: 1 (entries 1)" in stdout
    assert "Entries the judge did not answer: 2 (entries 4, 5)" in stdout
    scored = json.loads(out.read_text())
    assert [e["score"] for e in scored] == [85, None, 70, 60, None, None]
    assert scored[1]["judge_answer"] == "This response is quite good!"
    assert [e["model_response"] for e in scored] == responses
    # retried once after the 500, once after the timeout, and given up after the second try
    assert ollama.calls == {"score 85": 1, "chatty": 1, "flaky": 2, "score 60": 1, "slow": 2, "broken": 2}

    path_, _, body = ollama.requests[0]
    assert path_ == "/api/chat"
    assert body["model"] == "llama3"
    assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
    assert body["messages"] == [{"role": "user", "content": judge_prompt(entry("score 85"))}]
    assert judge_prompt(entry("x")).endswith(
        "and correct output `Red.`, score the model response `x` on a scale from 0 to 100, where 100 is the "
        "best score. Respond with the integer number only."
    )


def test_ollama_unknown_model_stops_with_one_line(script, ollama, tmp_path, capsys):
    ollama.status = 404
    assert (
        run_cli(script.main, ["--input_file", str(write(tmp_path, ["score 5"])), "--ollama_url", ollama.url])
        == 1
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "404" in lines[0]
    assert "not found" in lines[0]


def test_no_server_stops_with_a_hint(script, tmp_path, capsys):
    assert run_cli(script.main, ["--input_file", str(write(tmp_path, ["score 5"])), "--ollama_url", "http://127.0.0.1:9",
                 "--retries", "1", "--retry_delay", "0", "--timeout", "2"]) == 1  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and "cannot reach http://127.0.0.1:9/api/chat" in lines[0]
        and "ollama serve" in lines[0]
    )


def test_nothing_scored_is_exit_1(script, ollama, tmp_path, capsys):
    assert run_cli(script.main, ["--input_file", str(write(tmp_path, ["broken", "chatty"])), "--ollama_url", ollama.url,
                 "--retries", "0"]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert "Number of scores: 0 of 2" in captured.out and "Average score" not in captured.out
    assert "HTTP 500" in captured.err


def test_openai_compatible_endpoint(script, openai, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    out = tmp_path / "scored.json"
    script.main(["--input_file", str(write(tmp_path, ["score 90", "chatty", "score 41"])), "--output_file", str(out),
                 "--judge", "openai", "--api_base", openai.url + "/v1", "--judge_model", "judge-1",
                 "--api_key_env", "JUDGE_KEY"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert "Number of scores: 2 of 3" in stdout and "Average score: 65.50" in stdout
    assert [e["score"] for e in json.loads(out.read_text())] == [90, None, 41]
    path, headers, body = openai.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-1" and body["temperature"] == 0


def test_local_judge_runs_a_model_folder(script, tmp_path, capsys):
    """An untrained local model answers gibberish: counted as not a score, exit 1, no crash."""
    import torch

    from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
    from modeling_gpt_scratch.tokenization import load_tokenizer

    torch.manual_seed(0)
    config = GPTScratchConfig.from_preset("tiny", emb_dim=32, n_layers=2, n_heads=2, context_length=512)
    GPTScratchForCausalLM(config).save_pretrained(tmp_path / "judge")
    load_tokenizer().save_pretrained(tmp_path / "judge")
    out = tmp_path / "scored.json"
    assert run_cli(script.main, ["--input_file", str(write(tmp_path, ["score 5"])), "--output_file", str(out),
                 "--judge", "local", "--judge_model", str(tmp_path / "judge"), "--max_new_tokens", "3"]) == 1  # fmt: skip
    assert "Answers that are not a score: 1" in capsys.readouterr().out
    answer = json.loads(out.read_text())[0]["judge_answer"]
    assert isinstance(answer, str) and answer


def test_bad_input_file(script, tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([entry("x"), {"instruction": "a", "output": "b"}]))
    assert run_cli(script.main, ["--input_file", str(path)]) == 1
    assert 'entry 1 has no "model_response" key' in capsys.readouterr().err


def test_a_trickling_server_meets_the_deadline_and_odd_answers_are_counted(script, ollama, tmp_path, capsys):
    """Blank lines that never end an answer stop at --timeout (for the whole answer), and answers whose
    content is null or a number are "not a score" (7 is read as the text "7"), with nothing lost."""
    out = tmp_path / "scored.json"
    start = time.monotonic()
    code = run_cli(script.main, ["--input_file", str(write(tmp_path, ["trickle", "null", "number", "score 9"])),
                                 "--output_file", str(out), "--ollama_url", ollama.url, "--timeout", "1",
                                 "--retries", "0"])  # fmt: skip
    assert code == 0 and time.monotonic() - start < 4
    assert [e["score"] for e in json.loads(out.read_text())] == [None, None, 7, 9]
    assert "Number of scores: 2 of 4" in capsys.readouterr().out


def test_the_input_file_is_never_the_output(script, tmp_path, capsys):
    path = write(tmp_path, ["score 5"])
    before = path.read_text()
    assert "is the input file" in cli_error(
        script.main, ["--input_file", path, "--output_file", path], capsys
    )
    assert "does not exist" in cli_error(
        script.main, ["--input_file", path, "--output_file", tmp_path / "no" / "x.json"], capsys
    )
    assert "--max_entries must be at least 1" in cli_error(
        script.main, ["--input_file", path, "--max_entries", -1], capsys
    )
    assert path.read_text() == before
