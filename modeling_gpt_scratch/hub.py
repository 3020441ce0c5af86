"""Sharing on the Hugging Face Hub: a model card, and pushes that carry everything a fresh Python needs.

- `model_card(config, repo_id, ...)`: README.md text, YAML metadata (library_name, pipeline_tag from
  the head, tags, license, base_model, datasets, metrics) and a usage snippet that runs as written.
- `push_model(model, repo_id, ...)`: a model in memory: weights, config with `auto_map`, the code
  files, the tokenizer when given, and the card, in one commit.
- `push_run(folder, repo_id, ...)`: the end of a training run with --push_to_hub.
- `push_folder(folder, repo_id, ...)`: push a folder that `save_pretrained` (or a converter, or
  examples/pretrain.py) wrote. It refuses a folder whose code files are missing or differ from this
  package's (a repo that loads other code than the weights were made with), unless `refresh_code`
  pushes the package's files instead. The folder itself is never changed.

    python -m modeling_gpt_scratch.hub push out/pretrain your-name/my-gpt [--refresh_code] [--private]

Errors are `HubError` (a `CLIError`), one line saying what to do; the CLI prints `error: ...` and
exits 1, as every script of the project does.
"""

import contextlib
import fnmatch
import json
import math
import os
import re
import struct
import sys
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, ModelCardData, constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .cli import ArgumentParser, CLIError, one_line, run_cli

PACKAGE_DIR = Path(__file__).resolve().parent
CODE_FILES = ("configuration_gpt_scratch.py", "modeling_gpt_scratch.py")
MODEL_TYPE = "gpt_scratch"
DEFAULT_LICENSE = "apache-2.0"  # the project's and the book's code license; pass license= for your weights
# Weights derived from these repos keep their license (GPT-2's is MIT).
BASE_LICENSES = {
    "openai-community/gpt2": "mit",
    "openai-community/gpt2-medium": "mit",
    "openai-community/gpt2-large": "mit",
    "openai-community/gpt2-xl": "mit",
}
PIPELINES = {  # architecture suffix -> (pipeline_tag, Auto class)
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "LMHeadModel": ("text-generation", "AutoModelForCausalLM"),
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "Model": ("feature-extraction", "AutoModel"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class HubError(CLIError):
    """Pushing cannot go on; the message is one line that says how to fix it."""


def check_repo_id(repo_id: str, flag: str | None = None) -> str:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"{flag + ': ' if flag else ''}invalid repo id {repo_id!r}: use NAME or OWNER/NAME (letters, digits, '-', '_', '.'; "
            "no '--' or '..'; at most 96 characters)."
        ) from None
    return repo_id


def check_push_target(repo_id: str | None, output) -> str:
    """The repo a --push_to_hub run pushes to (--hub_model_id, else the output folder's name),
    checked before any work: a bad id or an offline Hub fails now, not after the run."""
    repo_id = repo_id or Path(output).absolute().name
    check_repo_id(repo_id, flag="--hub_model_id")
    if constants.HF_HUB_OFFLINE:
        raise HubError(
            "--push_to_hub needs the network, but HF_HUB_OFFLINE=1 is set: run with HF_HUB_OFFLINE=0"
        )
    return repo_id


def hub_id_or_none(name: object) -> str | None:
    """`name` when it reads as a Hub repo id and is not a local path (a base model worth naming)."""
    if not isinstance(name, str) or not HUB_ID.match(name) or name.startswith(".") or os.path.exists(name):
        return None
    return name if "/" in name else None


# ----------------------------------------------------------------------------------------- card
def _head(config: dict) -> tuple[str, str, str]:
    """(architecture, pipeline_tag, Auto class) of a config dict."""
    arch = (config.get("architectures") or ["GPTScratchForCausalLM"])[0]
    for suffix, (tag, auto) in PIPELINES.items():
        if arch.endswith(suffix):
            return arch, tag, auto
    return arch, "text-generation", "AutoModelForCausalLM"


def _usage(config: dict, repo_id: str, has_tokenizer: bool) -> str:
    arch, tag, auto = _head(config)
    remote = ", trust_remote_code=True" if config.get("auto_map") else ""
    lines = ["import torch", f"from transformers import {auto}, AutoTokenizer", ""]
    if has_tokenizer:
        lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{remote})')
    elif config.get("vocab_size", 0) >= 50257:
        lines.append('tokenizer = AutoTokenizer.from_pretrained("openai-community/gpt2")  # GPT-2\'s BPE')
    else:
        has_tokenizer = None  # no tokenizer fits: the snippet feeds token ids
    lines.append(f'model = {auto}.from_pretrained("{repo_id}"{remote}).eval()')
    if tag == "text-classification":
        text = "You are a winner you have been specially selected to receive $1000 cash"
    else:
        text = "Every effort moves you"
    if has_tokenizer is None:
        lines.append("input_ids = torch.tensor([[1, 2, 3]])  # this model came without a tokenizer")
    else:
        lines.append(f'input_ids = tokenizer("{text}", return_tensors="pt").input_ids')
    if tag == "text-generation":
        lines.append("with torch.no_grad():")
        lines.append("    output = model.generate(input_ids, max_new_tokens=20, do_sample=False)")
        lines.append(
            "print(" + ("output[0].tolist())" if has_tokenizer is None else "tokenizer.decode(output[0]))")
        )
    elif tag == "text-classification":
        lines.append("with torch.no_grad():")
        lines.append("    logits = model(input_ids).logits")
        lines.append("print(model.config.id2label[logits.argmax(-1).item()])")
    else:
        lines.append("with torch.no_grad():")
        lines.append("    hidden = model(input_ids).last_hidden_state  # (1, tokens, emb_dim)")
        lines.append("print(hidden.shape)")
    return "\n".join(lines)


def model_card(
    config: dict,
    repo_id: str,
    *,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    has_tokenizer: bool = True,
    num_parameters: int | None = None,
) -> str:
    """README.md for a repo holding `config` (a config.json dict): metadata the Hub indexes, what the
    model is, and a snippet that loads it from `repo_id` and runs it."""
    arch, tag, auto = _head(config)
    license = license or BASE_LICENSES.get(base_model or "", DEFAULT_LICENSE)
    all_tags = ["gpt-scratch", "llms-from-scratch"]
    all_tags += [t for t in (tags or []) if t not in all_tags]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=tag,
        tags=all_tags,
        license=license,
        base_model=base_model or None,
        datasets=list(datasets) if datasets else None,
        metrics=sorted({k.split()[-1] for k in metrics}) if metrics else None,  # "validation loss" -> loss
    )
    name = repo_id.split("/")[-1]
    ours = config.get("model_type") == MODEL_TYPE
    if ours:
        shape = (
            f"{config.get('n_layers')} transformer blocks, {config.get('n_heads')} attention heads, "
            f"embedding size {config.get('emb_dim')}, context length {config.get('context_length')}, "
            f"vocabulary {config.get('vocab_size')}"
        )
    else:
        shape = f"a `{config.get('model_type')}` model, exported from gpt-scratch"
    size = f" ({num_parameters / 1e6:,.1f}M parameters)" if num_parameters else ""
    parts = [
        f"---\n{data.to_yaml()}\n---",
        f"# {name}",
        f"The GPT of *Build a Large Language Model (From Scratch)* (Sebastian Raschka), as a Hugging Face "
        f"`transformers` model made with gpt-scratch: `{arch}`{size}, {shape}.",
    ]
    if base_model:
        parts.append(f"Made from [{base_model}](https://huggingface.co/{base_model}).")
    if datasets:
        parts.append("Trained on: " + ", ".join(f"`{d}`" for d in datasets) + ".")
    parts.append("## Usage")
    if config.get("auto_map"):
        parts.append(
            "The model's code (`configuration_gpt_scratch.py`, `modeling_gpt_scratch.py`) is in this repository, "
            "so loading it takes `trust_remote_code=True` (read the code first, and pin `revision=` to a commit "
            "to keep using the code you read). With the gpt-scratch package installed and imported "
            "(`import modeling_gpt_scratch`), the package's classes are used instead."
        )
    parts.append(f"```python\n{_usage(config, repo_id, has_tokenizer)}\n```")
    if metrics:
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items())
        parts.append(f"## Results\n\n| metric | value |\n|---|---|\n{rows}")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------- pushing
def _safetensors_parameters(folder: Path) -> int | None:
    """Parameters in the folder's safetensors files, from their headers (no weights are read)."""
    total, seen = 0, False
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, info in header.items():
            if key != "__metadata__":
                seen = True
                count = 1
                for d in info["shape"]:
                    count *= d
                total += count
    return total if seen else None


def _files(folder: Path, ignore: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue  # .cache/, .git/, editor files
        if any(fnmatch.fnmatch(rel, pattern) for pattern in ignore):
            continue
        out[rel] = path
    return out


def _code_sources(folder: Path, config: dict, files: dict[str, Path], check: str, refresh: bool) -> dict:
    """path in repo -> local file for the code files, checked against the installed package's."""
    if config.get("model_type") != MODEL_TYPE:
        return {}
    fix = (
        f"re-save {folder} with save_pretrained, or pass --refresh_code to push the installed package's files"
    )
    if not config.get("auto_map"):  # the Hub could not load it without the package
        raise HubError(
            f"{folder}/config.json has no auto_map: re-save it with save_pretrained after `import modeling_gpt_scratch`."
        )
    out = {}
    for name in CODE_FILES:
        local, ours = folder / name, PACKAGE_DIR / name
        if not local.is_file():
            if not refresh:
                raise HubError(f"{local} is missing: {fix}.")
        elif check == "same" and local.read_bytes() != ours.read_bytes() and not refresh:
            raise HubError(f"{local} differs from the installed gpt-scratch's {ours}: {fix}.")
        out[name] = ours if refresh else local
    return out


TIMEOUT_VARIABLE = "GPT_SCRATCH_HUB_TIMEOUT"


def hub_timeout() -> float:
    """Seconds a push waits for the Hub at each step (connecting, each send, each answer):
    GPT_SCRATCH_HUB_TIMEOUT, else 60."""
    text = os.environ.get(TIMEOUT_VARIABLE, "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise HubError(f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds")
    return seconds


@contextlib.contextmanager
def network_deadline():
    """huggingface_hub (1.x, 2.x) shares one httpx client whose timeout is None: a Hub that accepts
    a connection and never answers keeps create_repo/create_commit waiting forever (only its own
    downloads take HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT). For the length of the block that
    client waits `hub_timeout()` seconds at each step, then raises a timeout (after its few retries)."""
    seconds = hub_timeout()
    try:
        from huggingface_hub.utils import get_session

        client = get_session()
        previous = client.timeout
        client.timeout = type(previous)(seconds)
    except Exception:  # an older huggingface_hub on requests: its calls carry their own timeouts
        yield
        return
    try:
        yield
    finally:
        client.timeout = previous


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    refresh_code: bool = False,
    ignore_patterns: tuple[str, ...] = (),
    check_code: str = "same",
    num_parameters: int | None = None,
):
    """Push `folder` to `repo_id` in one commit, adding a model card when it has no README.md.

    `check_code="same"` refuses code files that are missing or differ from this package's ("present":
    only missing ones); `refresh_code` pushes the package's files in their place. Returns the
    `CommitInfo` (`.oid` is the new revision). Raises `HubError`; the folder is never written to."""
    check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HubError(f"{folder} has no config.json: push a folder written by save_pretrained.")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise HubError(f"{folder}/config.json: {one_line(e)}") from e
    if not isinstance(config, dict):
        raise HubError(
            f"{folder}/config.json holds a JSON {type(config).__name__}, not a model config (an object): "
            "push a folder written by save_pretrained."
        )
    files = _files(folder, tuple(ignore_patterns))
    files.update(_code_sources(folder, config, files, check_code, refresh_code))

    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE=1 is set and pushing needs the network: run with HF_HUB_OFFLINE=0.")
    api = HfApi(token=token)
    try:
        with network_deadline():
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # NAME -> OWNER/NAME
            card = None
            if "README.md" not in files:
                card = model_card(
                    config,
                    repo_id,
                    base_model=base_model,
                    datasets=datasets,
                    metrics=metrics,
                    license=license,
                    tags=tags,
                    has_tokenizer=any(name in files for name in TOKENIZER_FILES),
                    num_parameters=num_parameters or _safetensors_parameters(folder),
                )
            ops = [
                CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files.items()
            ]
            if card is not None:
                ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
            return api.create_commit(
                repo_id,
                ops,
                commit_message=commit_message or f"Upload {folder.name} with gpt-scratch",
                commit_description=commit_description,
                revision=revision,
            )
    except HubError:
        raise
    except Exception as e:  # huggingface_hub and httpx raise many kinds: HTTP status, network, auth
        hint = ""
        if "Timeout" in type(e).__name__:
            hint = f" (the Hub did not answer within {hub_timeout():g} s; {TIMEOUT_VARIABLE}=SECONDS waits longer)"
        raise HubError(f"pushing {folder} to {repo_id} failed: {one_line(e)}{hint}") from e


def push_model(
    model,
    repo_id: str,
    *,
    tokenizer=None,
    commit_message: str | None = None,
    max_shard_size: int | str | None = "50GB",
    base_model: str | None = None,
    **options,
):
    """Push a model of ours: `save_pretrained` into a temporary folder (weights, config with auto_map,
    code files), the tokenizer if given, a card, one commit. `base_model` defaults to the Hub id the
    model was loaded from, when it was one; `options` go to `push_folder` (token, private, revision,
    commit_description, tags, datasets, metrics, license)."""
    check_repo_id(repo_id)
    if base_model is None:
        base_model = hub_id_or_none(getattr(model.config, "_name_or_path", None))
        if base_model is not None and base_model.split("/")[-1] == repo_id.split("/")[-1]:
            base_model = None
    with tempfile.TemporaryDirectory(prefix="gpt-scratch-push-") as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        return push_folder(
            tmp,
            repo_id,
            commit_message=commit_message or "Upload model with gpt-scratch",
            base_model=base_model,
            check_code="present",
            num_parameters=model.num_parameters(),
            **options,
        )


def push_run(
    folder,
    repo_id: str,
    *,
    token=None,
    val_loss=None,
    metrics=None,
    commit_message="End of training",
    ignore_patterns=("checkpoints/*",),
    **card,
):
    """The end of a training run with --push_to_hub: `folder` without its checkpoints, one commit, a
    card with `metrics` (default: the validation loss) and `card`'s `push_folder` settings
    (base_model, datasets, tags, private). A failure says how to push the saved folder later."""
    if metrics is None:
        metrics = (
            {"validation loss": val_loss, "validation perplexity": math.exp(val_loss)} if val_loss else {}
        )
    card["base_model"] = hub_id_or_none(card.get("base_model"))
    try:
        info = push_folder(
            folder,
            repo_id,
            token=token,
            commit_message=commit_message,
            metrics=metrics,
            ignore_patterns=ignore_patterns,
            **card,
        )
    except HubError as e:
        raise HubError(
            f"the model is saved in {folder}, but {e} (push it later: python -m modeling_gpt_scratch.hub push "
            f"{folder} {repo_id})"
        ) from e
    print(f"Pushed {folder} -> {info.commit_url}", flush=True)
    return info


# -------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m modeling_gpt_scratch.hub", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("push", help="push a saved model folder to a Hub repo")
    p.add_argument("folder", help="a folder written by save_pretrained, a converter or examples/pretrain.py")
    p.add_argument("repo_id", help="NAME or OWNER/NAME")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--commit_message")
    p.add_argument("--refresh_code", action="store_true", help="push the installed package's code files")
    p.add_argument("--base_model", help="the Hub id the weights come from (model card)")
    p.add_argument("--dataset", action="append", dest="datasets", help="a dataset the model was trained on")
    p.add_argument(
        "--license", help=f"license of the weights (default: {DEFAULT_LICENSE}, GPT-2's mit for its weights)"
    )
    p.add_argument("--exclude", action="append", default=[], help="glob of files not to push (repeatable)")
    options = vars(parser.parse_args(argv))  # named as push_folder's parameters
    del options["command"]
    options["private"] = options["private"] or None
    options["ignore_patterns"] = ("checkpoints/*", *options.pop("exclude"))
    info = push_folder(**options)
    print(f"Pushed {options['folder']} -> {info.commit_url} (revision {info.oid})")


if __name__ == "__main__":
    sys.exit(run_cli(main))
