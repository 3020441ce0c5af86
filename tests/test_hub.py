"""Sharing on the Hub, against tests/fake_hub.py: what `push_to_hub`, the converters, examples/pretrain.py,
`python -m modeling_gpt_scratch.hub push` and the Trainer put in a repo must load in a fresh Python that
cannot import this package, at a pinned revision, and again offline from the cache with no request."""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_script

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM, GPTScratchModel, hub
from modeling_gpt_scratch.cli import run_cli
from modeling_gpt_scratch.tokenization import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub import TOKEN, FakeHub  # noqa: E402

TINY = dict(vocab_size=50257, context_length=32, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
# Prepended to a subprocess's code: `import modeling_gpt_scratch` fails there, as on a machine without it.
NO_PACKAGE = """
import sys
class _NoPackage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "modeling_gpt_scratch":
            raise ImportError("modeling_gpt_scratch is not installed in this test")
sys.meta_path.insert(0, _NoPackage())
"""


@pytest.fixture(scope="module")
def fake_hub():
    with FakeHub() as h:
        yield h


@pytest.fixture(scope="module")
def hub_env(fake_hub, tmp_path_factory):
    """A client of the fake hub: its own HF_HOME and cache, online, with a token."""
    home = tmp_path_factory.mktemp("hf_home")
    return dict(
        os.environ,
        HF_ENDPOINT=fake_hub.url,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_MODULES_CACHE=str(home / "modules"),
        HF_TOKEN=TOKEN,
        OMP_NUM_THREADS="1",
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONWARNINGS="ignore",
    )


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """GPT-2's tokenizer as a folder (from the offline cache), so subprocesses need no Hub for it."""
    folder = tmp_path_factory.mktemp("tokenizer")
    load_tokenizer().save_pretrained(folder)
    return folder


def run(code, env, cwd, no_package=False, timeout=300):
    result = subprocess.run(
        [sys.executable, "-c", (NO_PACKAGE if no_package else "") + code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            h.update(path.read_bytes())
            h.update(str(path.stat().st_mtime_ns).encode())
    return h.hexdigest()


def card_metadata(card: str) -> dict:
    import yaml

    return yaml.safe_load(card.split("---")[1])


def snippet(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1, card
    return blocks[0]


# --------------------------------------------------------------------- push, then load without the package
PUSH = """
import torch, modeling_gpt_scratch
from modeling_gpt_scratch import hub
from transformers import AutoModelForCausalLM, AutoTokenizer
from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM, GPTScratchForSequenceClassification
tok = AutoTokenizer.from_pretrained({tok!r})
x = torch.tensor([[6109, 3626, 6100, 345]])
torch.manual_seed(0)
model = GPTScratchForCausalLM(GPTScratchConfig(**{tiny!r})).eval()
first = hub.push_model(model, "tester/gen", tokenizer=tok, datasets=["the-verdict"], metrics={{"validation loss": 6.5}})
with torch.no_grad():
    torch.save(model(x).logits, "first.pt")
    for p in model.parameters():
        p.add_(0.01)
    torch.save(model(x).logits, "second.pt")
second = hub.push_model(model, "tester/gen", tokenizer=tok)
open("revisions.txt", "w").write(first.oid + " " + second.oid)
cls = GPTScratchForSequenceClassification(GPTScratchConfig(**{tiny!r}, num_labels=2,
    id2label={{0: "ham", 1: "spam"}}, label2id={{"ham": 0, "spam": 1}})).eval()
hub.push_model(cls, "tester/cls", tokenizer=tok)
with torch.no_grad():
    torch.save(cls(x).logits, "cls.pt")
# With the package imported, the repo loads without trust_remote_code, into the package's own class.
loaded = AutoModelForCausalLM.from_pretrained("tester/gen").eval()
assert type(loaded) is GPTScratchForCausalLM, type(loaded)
with torch.no_grad():
    assert torch.allclose(loaded(x).logits, torch.load("second.pt"), atol=1e-5)
print("pushed")
"""

LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline
first, second = open("revisions.txt").read().split()
x = torch.tensor([[6109, 3626, 6100, 345]])
tok = AutoTokenizer.from_pretrained("tester/gen", trust_remote_code=True)
assert tok("Every effort moves you").input_ids == x[0].tolist() and tok.pad_token_id == 50256
def logits(model):
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        return model.eval()(x).logits
new = logits(AutoModelForCausalLM.from_pretrained("tester/gen", trust_remote_code=True))
old = logits(AutoModelForCausalLM.from_pretrained("tester/gen", trust_remote_code=True, revision=first))
pinned = logits(AutoModelForCausalLM.from_pretrained("tester/gen", trust_remote_code=True, revision=second))
assert torch.allclose(new, torch.load("second.pt"), atol=1e-5) and torch.equal(new, pinned)
assert torch.allclose(old, torch.load("first.pt"), atol=1e-5) and not torch.allclose(old, new, atol=1e-3)
cls = AutoModelForSequenceClassification.from_pretrained("tester/cls", trust_remote_code=True)
assert torch.allclose(logits(cls), torch.load("cls.pt"), atol=1e-5)
assert cls.config.id2label == {0: "ham", 1: "spam"}
if PIPE:
    gen = pipeline("text-generation", model="tester/gen", trust_remote_code=True)
    out = gen("Every effort moves you", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("Every effort moves you") and len(out) > len("Every effort moves you"), out
    cls.push_to_hub("tester/cls-copy")  # the copied code's push_to_hub, without the package: transformers' own
if LOCAL:  # a folder save_pretrained wrote
    local = AutoModelForCausalLM.from_pretrained(LOCAL, trust_remote_code=True)
    assert type(local).__module__.startswith("transformers_modules"), type(local).__module__
for name in ("gen", "cls"):
    exec(open(f"snippet-{name}.py").read(), {})
assert not any(m.split(".")[0] == "modeling_gpt_scratch" for m in sys.modules), "the package was imported"
print("loaded")
"""


def test_push_then_load_without_the_package_pinned_and_offline(fake_hub, hub_env, tokenizer_dir, tmp_path):
    out = run(PUSH.format(tok=str(tokenizer_dir), tiny=TINY), hub_env, tmp_path)
    assert out.strip().endswith("pushed")
    assert fake_hub.unknown == [], fake_hub.unknown

    # What landed: weights, config with auto_map, the package's code files, tokenizer, card.
    files = fake_hub.files("tester/gen")
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "README.md",
    } <= set(files)
    for name in hub.CODE_FILES:
        assert files[name] == (REPO / "modeling_gpt_scratch" / name).read_bytes(), name
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt_scratch.GPTScratchForCausalLM"
    first, second = (tmp_path / "revisions.txt").read_text().split()
    assert fake_hub.history("tester/gen")[:2] == [second, first]
    first_card = fake_hub.files("tester/gen", first)["README.md"].decode()
    meta = card_metadata(first_card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "gpt-scratch" in meta["tags"] and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["the-verdict"] and meta["metrics"] == ["loss"] and "base_model" not in meta
    assert "| validation loss | 6.5000 |" in first_card
    cls_card = fake_hub.files("tester/cls")["README.md"].decode()
    assert card_metadata(cls_card)["pipeline_tag"] == "text-classification"
    (tmp_path / "snippet-gen.py").write_text(snippet(files["README.md"].decode()))
    (tmp_path / "snippet-cls.py").write_text(snippet(cls_card))

    # A fresh Python that cannot import the package: Auto classes, tokenizer, pipeline, revisions, snippets.
    out = run(LOAD.replace("PIPE", "True").replace("LOCAL", "None"), hub_env, tmp_path, no_package=True)
    assert out.strip().endswith("loaded"), out
    assert fake_hub.unknown == [], fake_hub.unknown
    copy = fake_hub.files("tester/cls-copy")
    assert {"model.safetensors", "config.json", "README.md", *hub.CODE_FILES} <= set(copy)

    # Again with HF_HUB_OFFLINE=1 from the cache, and a local folder: the same results and not one request.
    GPTScratchForCausalLM(GPTScratchConfig(**TINY)).save_pretrained(tmp_path / "local")
    fake_hub.requests.clear()
    out = run(
        LOAD.replace("PIPE", "False").replace("LOCAL", repr(str(tmp_path / "local"))),
        {**hub_env, "HF_HUB_OFFLINE": "1"},
        tmp_path,
        no_package=True,
    )
    assert out.strip().endswith("loaded"), out
    assert fake_hub.requests == []


# --------------------------------------------------------------------------------------------- model cards
def test_card_metadata_and_snippet_follow_the_head_and_the_base_model():
    config = GPTScratchModel(GPTScratchConfig(**TINY)).config.to_dict()
    config.update(
        architectures=["GPTScratchModel"], auto_map={"AutoModel": "modeling_gpt_scratch.GPTScratchModel"}
    )
    card = hub.model_card(config, "me/features", base_model="openai-community/gpt2", num_parameters=1_600_000)
    meta = card_metadata(card)
    assert meta["pipeline_tag"] == "feature-extraction" and meta["base_model"] == "openai-community/gpt2"
    assert meta["license"] == "mit"  # GPT-2's weights keep GPT-2's license
    code = snippet(card)
    assert 'AutoModel.from_pretrained("me/features", trust_remote_code=True)' in code
    assert "last_hidden_state" in code and "1.6M parameters" in card
    # An exported plain GPT-2 loads without remote code; a model without tokenizer uses GPT-2's.
    plain = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257}
    code = snippet(hub.model_card(plain, "me/plain", has_tokenizer=False))
    assert (
        "trust_remote_code" not in code and 'AutoTokenizer.from_pretrained("openai-community/gpt2")' in code
    )
    compile(code, "snippet", "exec")


# ------------------------------------------------------------------ `python -m modeling_gpt_scratch.hub push`
@pytest.fixture
def saved(tmp_path, tokenizer_dir):
    folder = tmp_path / "saved"
    GPTScratchForCausalLM(GPTScratchConfig(**TINY)).save_pretrained(folder)
    load_tokenizer(str(tokenizer_dir)).save_pretrained(folder)
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    (folder / "checkpoints" / "step_1" / "optimizer.bin").write_bytes(b"x")
    return folder


@pytest.fixture
def online(fake_hub, monkeypatch):
    """This process as a client of the fake hub (HfApi reads the endpoint when it is made)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fake_hub.fail.clear()
    yield fake_hub
    fake_hub.fail.clear()


def edit(folder, name, text):
    (folder / name).write_text(text)


CASES = {
    "missing code": (
        lambda f: (f / "modeling_gpt_scratch.py").unlink(),
        "tester/x",
        "modeling_gpt_scratch.py is missing",
    ),
    "stale code": (
        lambda f: edit(f, "configuration_gpt_scratch.py", "# old\n"),
        "tester/x",
        "differs from the installed",
    ),
    "no auto_map": (
        lambda f: edit(f, "config.json", json.dumps({"model_type": "gpt_scratch"})),
        "tester/x",
        "has no auto_map",
    ),
    "invalid repo id": (lambda f: None, "tester/bad--name", "invalid repo id 'tester/bad--name'"),
    "server error": (lambda f: None, "tester/x", "failed"),
}


@pytest.mark.parametrize("case", CASES)
def test_push_folder_refuses_with_one_line_and_leaves_the_folder(case, saved, online, capsys):
    spoil, repo_id, message = CASES[case]
    spoil(saved)
    if case == "server error":
        online.fail["commit"] = 500
    before, commits = folder_hash(saved), {r: len(online.history(r)) for r in online.repos}
    assert run_cli(hub.main, ["push", str(saved), repo_id, "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    if case in ("missing code", "stale code"):
        assert "save_pretrained" in err and "--refresh_code" in err
    if case == "server error":
        assert "500" in err
    assert folder_hash(saved) == before
    assert {r: len(online.history(r)) for r in online.repos if r in commits} == commits


def test_refresh_code_pushes_the_packages_files_and_skips_checkpoints(saved, online, capsys):
    edit(saved, "modeling_gpt_scratch.py", "# an older version\n")
    before = folder_hash(saved)
    assert (
        run_cli(hub.main, ["push", str(saved), "tester/refreshed", "--token", TOKEN, "--refresh_code"]) == 0
    )
    files = online.files("tester/refreshed")
    assert (
        files["modeling_gpt_scratch.py"]
        == (REPO / "modeling_gpt_scratch" / "modeling_gpt_scratch.py").read_bytes()
    )
    assert not any(name.startswith("checkpoints/") for name in files) and "tokenizer.json" in files
    assert folder_hash(saved) == before
    assert online.history("tester/refreshed")[0] in capsys.readouterr().out


def test_offline_push_is_refused(saved, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert run_cli(hub.main, ["push", str(saved), "tester/x"]) == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# ------------------------------------------------------------------------------ converters and pretraining
def test_convert_hf_gpt2_pushes_with_the_hub_input_as_base_model(fake_hub, hub_env, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    src = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4))
    src.save_pretrained(tmp_path / "src")
    fake_hub.commit("acme/tiny-gpt2", {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()})
    args = ["--input", "acme/tiny-gpt2", "--output", tmp_path / "tiny-gpt2-scratch", "--push_to_hub"]
    result = run_script(REPO / "conversion" / "convert_hf_gpt2.py", *args, env=hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    files = fake_hub.files("tester/tiny-gpt2-scratch")  # the default repo: the output folder's name
    assert f"-> {fake_hub.url}/tester/tiny-gpt2-scratch/commit/" in result.stdout
    meta = card_metadata(files["README.md"].decode())
    assert meta["base_model"] == "acme/tiny-gpt2" and meta["pipeline_tag"] == "text-generation"
    assert {"model.safetensors", *hub.CODE_FILES} <= set(files)
    # A bad repo id fails before converting anything.
    spec = importlib.util.spec_from_file_location(
        "convert_hf_gpt2", REPO / "conversion" / "convert_hf_gpt2.py"
    )
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    argv = ["--input", str(tmp_path / "src"), "--output", str(tmp_path / "other"), "--push_to_hub"]
    capsys.readouterr()
    assert run_cli(conv.main, [*argv, "--hub_model_id", "a/b/c"]) == 1
    assert capsys.readouterr().err.startswith("error: --hub_model_id: invalid repo id 'a/b/c'")
    assert not (tmp_path / "other").exists()


TRAINER = """
import torch, modeling_gpt_scratch
from modeling_gpt_scratch import hub
from transformers import Trainer, TrainingArguments
from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM
torch.manual_seed(0)
model = GPTScratchForCausalLM(GPTScratchConfig(**{tiny!r}))
data = [{{"input_ids": torch.randint(0, 50257, (16,)), "labels": torch.randint(0, 50257, (16,))}} for _ in range(8)]
args = TrainingArguments("run", per_device_train_batch_size=4, max_steps=4, save_steps=2, push_to_hub=True,
    hub_model_id="tester/trained", hub_strategy="checkpoint", report_to=[], use_cpu=True, logging_steps=2,
    disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=data)
trainer.train()
trainer.push_to_hub()
print("trained")
"""


def test_trainer_push_to_hub_lands_its_checkpoint(fake_hub, hub_env, tmp_path):
    out = run(TRAINER.format(tiny=TINY), hub_env, tmp_path)
    assert out.strip().endswith("trained")
    files = fake_hub.files("tester/trained")
    assert {
        "last-checkpoint/model.safetensors",
        "last-checkpoint/optimizer.pt",
        "last-checkpoint/trainer_state.json",
    } <= set(files)
    # step 2's push runs in the background; the Trainer skips step 4's if that one is still going
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] in (2, 4)
    assert {"model.safetensors", "config.json", "README.md", *hub.CODE_FILES} <= set(files)
    assert fake_hub.unknown == [], fake_hub.unknown


def test_pretrain_pushes_at_the_end(fake_hub, hub_env, shared_data, tokenizer_dir, tmp_path):
    args = [
        "--config_name", "tiny", "--config_overrides", "emb_dim=32,n_layers=2,n_heads=2,context_length=32",
        "--max_new_tokens", "3", "--eval_iters", "1", "--max_train_steps", "2", "--eval_steps", "2",
        "--output_dir", tmp_path / "verdict-gpt", "--checkpointing_steps", "1", "--push_to_hub",
        "--train_file", shared_data / "the-verdict" / "the-verdict.txt", "--tokenizer_name", tokenizer_dir,
    ]  # fmt: skip
    env = {**hub_env, "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    result = run_script(REPO / "examples" / "pretrain.py", *args, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    files = fake_hub.files("tester/verdict-gpt")
    assert {
        "model.safetensors",
        "tokenizer.json",
        "training_log.json",
        "loss-plot.png",
        *hub.CODE_FILES,
    } <= set(files)
    assert not any(name.startswith("checkpoints/") for name in files)
    meta = card_metadata(files["README.md"].decode())
    assert (
        meta["metrics"] == ["loss", "perplexity"] and "datasets" not in meta
    )  # --train_file: not the default
    assert fake_hub.repos["tester/verdict-gpt"].commits[fake_hub.history("tester/verdict-gpt")[0]].title == (
        "End of training"
    )
