#!/usr/bin/env python
"""Score model responses 0-100 with an LLM judge, as in chapter 7 (part 3): Ollama, any OpenAI-compatible
chat endpoint, or a local model folder.

    ollama pull llama3 && ollama serve          # in another terminal, as in the book
    python examples/evaluate_responses.py --input_file out/sft/instruction-data-with-response.json
    python examples/evaluate_responses.py --input_file ... --judge openai --api_base https://api.openai.com/v1 \\
        --judge_model gpt-4o-mini               # the key comes from $OPENAI_API_KEY (see --api_key_env)
    python examples/evaluate_responses.py --input_file ... --judge local --judge_model out/some-instruct-model

Each entry ({"instruction", "input", "output", "model_response"}, as examples/finetune_instruction.py and
the book write them) is put to the judge with the book's prompt; the answer must be the integer score.
Ollama is asked as the book asks it (POST /api/chat, options seed 123, temperature 0, num_ctx 2048,
the streamed NDJSON answer joined). HTTP uses only the standard library. A timeout, a refused connection
or a 5xx/429 answer is retried (--retries, --timeout); an entry that still fails, or whose answer is not
a number from 0 to 100, is counted and reported, never fatal. The output file is the input with each
entry's score (null when there is none) and the judge's raw answer. Printed at the end: the number of
scores and their average, the book's "Number of scores: 110 of 110" / "Average score: 50.32".
"""

import json
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from modeling_gpt_scratch.cli import ArgumentParser, CLIError, check_number, run_cli, write_json
from modeling_gpt_scratch.instruction import REQUIRED_KEYS, judge_prompt
from modeling_gpt_scratch.resolve import load_pretrained, load_tokenizer_for

SCORE = re.compile(r"\s*(?:score\s*[:=]?\s*)?(\d{1,3})(?:\.0+)?\s*(?:/\s*100)?\s*[.!]?\s*", re.IGNORECASE)
OLLAMA_OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 2048}  # the book's


class JudgeError(Exception):
    """The judge could not be asked or did not answer (after the retries)."""


class UnreachableError(JudgeError):
    """Nothing listens at the address (connection refused, unknown host)."""


class FatalJudgeError(JudgeError):
    """A mistake that no retry fixes (unknown model, bad key, wrong URL): stop at once."""


def parse_score(answer: str):
    """The integer the judge answered, or None. The book asks for "the integer number only" and
    takes `int(answer)`; this also accepts "85.", "Score: 85" and "85/100", nothing longer."""
    match = SCORE.fullmatch(answer or "")
    if not match:
        return None
    score = int(match.group(1))
    return score if 0 <= score <= 100 else None


# --------------------------------------------------------------------------------------- judges
def post_json(url, payload, headers, timeout):
    """POST JSON, give back the open response; errors as JudgeError (retryable) or FatalJudgeError."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        body = " ".join(error.read().decode("utf-8", "replace")[:300].split())
        message = f"{url} answered HTTP {error.code}: {body or error.reason}"
        if error.code in (408, 429) or error.code >= 500:
            raise JudgeError(message) from error
        raise FatalJudgeError(message) from error
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        kind = (
            UnreachableError if isinstance(reason, ConnectionRefusedError | socket.gaierror) else JudgeError
        )
        raise kind(f"cannot reach {url}: {reason}") from error


class OllamaJudge:
    """The book's `query_model`: POST /api/chat and join the streamed NDJSON `message.content` parts."""

    def __init__(self, url, model, timeout):
        self.url = url.rstrip("/") + "/api/chat"
        self.model = model
        self.timeout = timeout

    def __call__(self, prompt):
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": OLLAMA_OPTIONS,
        }
        parts = []
        deadline = time.monotonic() + self.timeout  # for the whole answer, however slowly it trickles
        try:
            with post_json(self.url, payload, {}, self.timeout) as response:
                for line in response:
                    if time.monotonic() > deadline:
                        raise JudgeError(
                            f"{self.url}: no complete answer within --timeout {self.timeout:g} s"
                        )
                    if not line.strip():
                        continue
                    message = json.loads(line.decode("utf-8"))
                    if "error" in message:
                        raise JudgeError(f"Ollama: {message['error']}")
                    content = message.get("message", {}).get("content")
                    parts.append("" if content is None else str(content))
                    if message.get("done"):
                        break
        except (TimeoutError, OSError) as error:  # a stream that stops half-way
            raise JudgeError(f"{self.url}: the answer stopped ({error})") from error
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as error:
            raise JudgeError(f"{self.url} did not answer in Ollama's format ({error})") from error
        return "".join(parts)


class OpenAIJudge:
    """Any OpenAI-compatible `/chat/completions` (OpenAI, vLLM, llama.cpp, LM Studio, Ollama's /v1)."""

    def __init__(self, api_base, model, api_key, timeout):
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def __call__(self, prompt):
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": 123,
        }
        try:
            with post_json(self.url, payload, self.headers, self.timeout) as response:
                answer = json.loads(response.read().decode("utf-8"))
            content = answer["choices"][0]["message"]["content"]
            return "" if content is None else str(content)
        except (TimeoutError, OSError) as error:
            raise JudgeError(f"{self.url}: the answer stopped ({error})") from error
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as error:
            raise JudgeError(
                f"{self.url} did not answer in the chat-completions format ({error!r})"
            ) from error


class LocalJudge:
    """A causal LM folder (ours or any transformers model), greedy; its chat template when it has one."""

    def __init__(self, folder, max_new_tokens):
        self.tokenizer = load_tokenizer_for(None, folder)
        self.model = load_pretrained(AutoModelForCausalLM, folder, dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, prompt):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and ids.shape[1] + self.max_new_tokens > limit:
            ids = ids[:, -(limit - self.max_new_tokens) :]  # keep the end: it says what to answer
        with torch.no_grad():
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        return tok.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def ask(judge, prompt, retries, retry_delay):
    """The judge's answer, asking again after a transient failure; JudgeError once they are spent."""
    for attempt in range(retries + 1):
        try:
            return judge(prompt)
        except FatalJudgeError:
            raise
        except JudgeError:
            if attempt == retries:
                raise
            time.sleep(retry_delay * 2**attempt)


# ----------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = ArgumentParser(prog="evaluate_responses.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input_file", required=True, help="JSON list of entries with the responses to score")
    p.add_argument("--response_key", default="model_response", help="the key that holds the response")
    p.add_argument("--output_file", help="default: INPUT_FILE with -scored before .json")
    p.add_argument("--score_key", default="score", help="each entry's score goes here in the output")
    p.add_argument("--judge", choices=("ollama", "openai", "local"), default="ollama")
    p.add_argument("--judge_model", help="ollama: llama3; openai: gpt-4o-mini; local: a model folder")
    p.add_argument("--ollama_url", default="http://localhost:11434", help="Ollama's address")
    p.add_argument("--api_base", default="https://api.openai.com/v1", help="OpenAI-compatible base URL")
    p.add_argument(
        "--api_key_env", default="OPENAI_API_KEY", help="environment variable with the API key (none: no key)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    p.add_argument("--retries", type=int, default=3, help="extra tries after a timeout or a 5xx/429 answer")
    p.add_argument("--retry_delay", type=float, default=2.0, help="seconds before the first retry, doubling")
    p.add_argument("--max_new_tokens", type=int, default=8, help="--judge local: tokens per answer")
    p.add_argument("--max_entries", type=int, help="score only the first N entries")
    args = p.parse_args(argv)
    check_number("--timeout", args.timeout, above=0)
    check_number("--retries", args.retries, at_least=0)
    check_number("--retry_delay", args.retry_delay, at_least=0)
    check_number("--max_new_tokens", args.max_new_tokens, at_least=1)
    check_number("--max_entries", args.max_entries, at_least=1)
    if args.judge == "local" and not args.judge_model:
        raise CLIError("--judge local needs --judge_model FOLDER (a causal LM saved with save_pretrained)")
    input_file = Path(args.input_file)
    args.output_file = Path(args.output_file or input_file.with_suffix("").as_posix() + "-scored.json")
    if args.output_file.exists() and input_file.exists() and args.output_file.samefile(input_file):
        raise CLIError(
            f"--output_file {args.output_file} is the input file: write the scores to another file"
        )
    if not args.output_file.parent.is_dir():
        raise CLIError(
            f"--output_file {args.output_file}: the folder {args.output_file.parent} does not exist"
        )
    if args.output_file.is_dir():
        raise CLIError(f"--output_file {args.output_file} is a folder: name a file")
    try:  # the scores are written after every answer: find out now, not after the first judging
        tempfile.TemporaryFile(dir=args.output_file.parent).close()
    except OSError as error:
        raise CLIError(
            f"--output_file {args.output_file}: cannot write in {args.output_file.parent}: {error}"
        ) from error
    args.judge_model = args.judge_model or {"ollama": "llama3", "openai": "gpt-4o-mini"}[args.judge]
    return args


def read_entries(args):
    path = Path(args.input_file)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CLIError(f"cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise CLIError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(entries, list) or not entries:
        raise CLIError(f"{path} must hold a non-empty JSON list of entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CLIError(f"{path}: entry {index} is not an object")
        for key in (*REQUIRED_KEYS, args.response_key):
            if key not in entry:
                raise CLIError(f'{path}: entry {index} has no "{key}" key (it has {sorted(entry)})')
    return entries[: args.max_entries]


def main(argv=None):
    args = parse_args(argv)
    entries = read_entries(args)
    if args.judge == "ollama":
        judge = OllamaJudge(args.ollama_url, args.judge_model, args.timeout)
    elif args.judge == "openai":
        judge = OpenAIJudge(
            args.api_base, args.judge_model, os.environ.get(args.api_key_env or ""), args.timeout
        )
    else:
        judge = LocalJudge(args.judge_model, args.max_new_tokens)

    scores, unparsed, failed = [], [], []
    for index, entry in enumerate(entries):
        try:
            answer = ask(judge, judge_prompt(entry, args.response_key), args.retries, args.retry_delay)
        except FatalJudgeError as error:
            raise CLIError(f"{error} (judge {args.judge}, model {args.judge_model})") from error
        except UnreachableError as error:
            if not scores and not unparsed:  # never answered: a wrong address or a server not started
                hint = "start it with `ollama serve`" if args.judge == "ollama" else "check --api_base"
                raise CLIError(f"{error}: {hint}") from error
            print(f"Entry {index}: no answer after {args.retries + 1} tries: {error}", file=sys.stderr)
            entry[args.score_key], entry["judge_answer"] = None, None
            failed.append(index)
            continue
        except JudgeError as error:
            print(f"Entry {index}: no answer after {args.retries + 1} tries: {error}", file=sys.stderr)
            entry[args.score_key], entry["judge_answer"] = None, None
            failed.append(index)
            continue
        score = parse_score(answer)
        entry[args.score_key], entry["judge_answer"] = score, answer
        if score is None:
            print(f"Could not convert score: {answer!r} (entry {index})", file=sys.stderr)
            unparsed.append(index)
        else:
            scores.append(score)
        write_json(
            args.output_file, entries[: index + 1], indent=4
        )  # after every entry: an interruption loses nothing
        print(f"\rScoring entries: {index + 1}/{len(entries)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    output = args.output_file
    write_json(output, entries, indent=4)
    print(f"Number of scores: {len(scores)} of {len(entries)}")
    if unparsed:
        print(f"Answers that are not a score: {len(unparsed)} (entries {', '.join(map(str, unparsed))})")
    if failed:
        print(f"Entries the judge did not answer: {len(failed)} (entries {', '.join(map(str, failed))})")
    if scores:
        print(f"Average score: {sum(scores) / len(scores):.2f}")
    print(f"Scores written to {output}")
    if not scores:
        raise CLIError("no entry was scored")


if __name__ == "__main__":
    sys.exit(run_cli(main))
