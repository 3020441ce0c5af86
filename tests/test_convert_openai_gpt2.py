"""conversion/convert_openai_gpt2.py and modeling_gpt_scratch/tf_checkpoint.py, on checkpoints that
TensorFlow itself writes.

One TensorFlow process per test module (`tf_written`) writes every checkpoint the tests need: tiny
GPT-2s laid out exactly as OpenAI's release (tf.compat.v1 variable scopes and a v1 `Saver`, so
`checkpoint`, `model.ckpt.index`, `model.ckpt.data-00000-of-00001` and `model.ckpt.meta`), the
same with a tensor too many, too few or of the wrong dtype, and, for the reader, bundles of many
tensors of every dtype and a bundle in two data files. The converted model must compute the logits
of a `GPT2LMHeadModel` holding the same numpy arrays and generate the same tokens; bad input must
fail with one `error:` line naming the file or tensor, and leave no output behind.

TensorFlow runs in a subprocess: `python` of this environment when it has TensorFlow (`pip install
-e '.[dev,test-tf]'`), else the interpreter named by GPT_SCRATCH_TF_PYTHON. Without either the
tests are skipped, except in CI, where they fail.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    BAD_OPTIONS,
    assert_bad_option_refused,
    assert_main_fails_cleanly,
    assert_model_folder,
    assert_output_folder_rules,
    assert_process_fails_cleanly,
    assert_same_generations,
    convert_sharded_bfloat16,
    prompts,
)
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

import modeling_gpt_scratch  # noqa: F401  (registers the Auto classes)
from modeling_gpt_scratch import GPTScratchForCausalLM
from modeling_gpt_scratch.conversion import openai_gpt2 as conv
from modeling_gpt_scratch.conversion import tf_checkpoint
from modeling_gpt_scratch.conversion.tf_checkpoint import CheckpointError, TFCheckpoint

REPO = Path(__file__).resolve().parents[1]

# Writes the checkpoints listed in a JSON file: {"kind", "prefix", "arrays" (.npz), "names"}.
TF_WRITER = r"""
import contextlib, json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf


def saver(prefix, arrays):  # as OpenAI's code: variables in nested scopes, tf.compat.v1's Saver
    graph = tf.Graph()
    with graph.as_default():
        for name, array in arrays.items():
            *scopes, leaf = name.split("/")
            with contextlib.ExitStack() as stack:
                for scope in scopes:
                    stack.enter_context(tf.compat.v1.variable_scope(scope))
                tf.compat.v1.get_variable(leaf, initializer=tf.constant(array))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, prefix)


def save_v2(prefix, arrays):  # the op every Saver and tf.train.Checkpoint runs
    names = list(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])


def sharded(prefix, arrays, shards=2):  # as a Saver(sharded=True) over two devices does
    names, parts = list(arrays), []
    for k in range(shards):
        parts.append(f"{prefix}_temp/part-{k:05d}-of-{shards:05d}")
        save_v2(parts[-1], {n: arrays[n] for n in names[k::shards]})
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix, delete_old_dirs=True)


listed = {}
for job in json.load(open(sys.argv[1])):
    with np.load(job["arrays"]) as npz:
        arrays = {name: npz[key] for name, key in job["names"].items()}
    {"saver": saver, "save_v2": save_v2, "sharded": sharded}[job["kind"]](job["prefix"], arrays)
    listed[job["prefix"]] = [[name, shape] for name, shape in tf.train.list_variables(job["prefix"])]
json.dump(listed, open(sys.argv[2], "w"))
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def tf_python() -> str:
    if os.environ.get("GPT_SCRATCH_TF_PYTHON"):
        return os.environ["GPT_SCRATCH_TF_PYTHON"]
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    reason = (
        "TensorFlow is needed to write the test checkpoints: pip install -e '.[dev,test-tf]', "
        "or set GPT_SCRATCH_TF_PYTHON to a Python that has it"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# ------------------------------------------------------------------------ OpenAI-shaped arrays


def hparams(n_vocab, n_ctx, n_embd, n_head, n_layer):
    return {"n_vocab": n_vocab, "n_ctx": n_ctx, "n_embd": n_embd, "n_head": n_head, "n_layer": n_layer}


def openai_shapes(hp) -> dict:
    d = hp["n_embd"]
    shapes = {"model/wte": (hp["n_vocab"], d), "model/wpe": (hp["n_ctx"], d)}
    for i in range(hp["n_layer"]):
        for sub, shape in {
            "ln_1/g": (d,), "ln_1/b": (d,), "attn/c_attn/w": (1, d, 3 * d), "attn/c_attn/b": (3 * d,),
            "attn/c_proj/w": (1, d, d), "attn/c_proj/b": (d,), "ln_2/g": (d,), "ln_2/b": (d,),
            "mlp/c_fc/w": (1, d, 4 * d), "mlp/c_fc/b": (4 * d,), "mlp/c_proj/w": (1, 4 * d, d),
            "mlp/c_proj/b": (d,),
        }.items():  # fmt: skip
            shapes[f"model/h{i}/{sub}"] = shape
    shapes.update({"model/ln_f/g": (d,), "model/ln_f/b": (d,)})
    return shapes


def openai_arrays(hp, seed=0) -> dict:
    """Random weights, large enough (std 0.2) that argmax and beam choices are clear-cut."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in openai_shapes(hp).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("/g"):
            arrays[name] = 1 + 0.1 * noise
        elif name.endswith("/b"):
            arrays[name] = 0.1 * noise
        else:
            arrays[name] = 0.2 * noise
    return arrays


def gpt2_name(openai_name: str) -> str:
    """`model/h3/attn/c_attn/w` -> `transformer.h.3.attn.c_attn.weight` (as the book's
    `load_weights_into_gpt` reads OpenAI's names), written independently of the converter."""
    parts = openai_name.split("/")[1:]
    if parts[0] in ("wte", "wpe"):
        return f"transformer.{parts[0]}.weight"
    if parts[0].startswith("h"):
        parts[0] = f"h.{parts[0][1:]}"
    leaf = {"w": "weight", "g": "weight", "b": "bias"}[parts[-1]]
    return "transformer." + ".".join(parts[:-1]) + "." + leaf


def gpt2_reference(hp, arrays) -> GPT2LMHeadModel:
    """transformers' GPT-2 holding the same arrays (kernels squeezed to Conv1D's [in, out])."""
    eot = hp["n_vocab"] - 1
    config = GPT2Config(
        vocab_size=hp["n_vocab"],
        n_positions=hp["n_ctx"],
        n_embd=hp["n_embd"],
        n_head=hp["n_head"],
        n_layer=hp["n_layer"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=eot,
        eos_token_id=eot,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    sd = {gpt2_name(k): torch.from_numpy(v[0] if v.ndim == 3 else v) for k, v in arrays.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, sd["transformer.wte.weight"])
    return model.eval()


# ------------------------------------------------------------- the checkpoints TensorFlow writes

SHAPES = {
    # the release's vocabulary (and tokenizer), the smallest other sizes
    "gpt2-vocab": hparams(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1),
    "two-layers": hparams(n_vocab=100, n_ctx=32, n_embd=32, n_head=4, n_layer=2),
    "three-heads": hparams(n_vocab=61, n_ctx=24, n_embd=48, n_head=3, n_layer=3),
    "one-wide-layer": hparams(n_vocab=77, n_ctx=64, n_embd=64, n_head=8, n_layer=1),
}


def _variants():
    """Checkpoints that differ from "two-layers" in their tensors: name -> (hparams, arrays)."""
    hp = SHAPES["two-layers"]
    extra = {**openai_arrays(hp), "global_step": np.array(1000, dtype=np.int64)}
    missing = openai_arrays(hp)
    del missing["model/h1/mlp/c_fc/b"]
    wrong_dtype = {**openai_arrays(hp), "model/wpe": np.zeros((32, 32), dtype=np.int32)}
    return {"extra-tensor": (hp, extra), "missing-tensor": (hp, missing), "int-tensor": (hp, wrong_dtype)}


def _reader_arrays(rng) -> dict:
    """Every dtype numpy and TensorFlow share, scalars and empty tensors, and enough long names
    that the index spans several table blocks (256 KiB each) and many restart points."""
    arrays = {
        "scalar/f32": np.float32(3.5),
        "empty": np.zeros((0, 3), np.float32),
        "bool": rng.random((3, 5)) > 0.5,
        "complex64": (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64),
    }
    for dtype in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16"):
        arrays[f"dtypes/{dtype}"] = (rng.standard_normal((2, 3, 4)) * 100).astype(dtype)
    for i in range(6000):
        name = f"model/block_{i:05d}/a_fairly_long_scope_name_{i % 7}/kernel"
        arrays[name] = rng.standard_normal(i % 5 + 1).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def tf_written(tmp_path_factory, shared_data):
    """Runs TensorFlow once: {"folders": name -> (folder, hparams, arrays), "reader": ..., "listed": ...}."""
    python = tf_python()
    root = tmp_path_factory.mktemp("tf")
    jobs, folders = [], {}

    def add(kind, prefix, arrays):
        npz = root / f"{len(jobs)}.npz"
        names = {name: f"a{i}" for i, name in enumerate(arrays)}
        np.savez(npz, **{names[name]: np.asarray(a) for name, a in arrays.items()})
        jobs.append({"kind": kind, "prefix": str(prefix), "arrays": str(npz), "names": names})

    checkpoints = {name: (hp, openai_arrays(hp, seed=i)) for i, (name, hp) in enumerate(SHAPES.items())}
    checkpoints.update(_variants())
    for name, (hp, arrays) in checkpoints.items():
        folder = root / name
        folder.mkdir()
        (folder / "hparams.json").write_text(json.dumps(hp))
        for file in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(shared_data / "gpt2_tokenizer" / "openai" / file, folder / file)
        add("saver", folder / "model.ckpt", arrays)
        folders[name] = (folder, hp, arrays)

    rng = np.random.default_rng(0)
    reader = {"many": _reader_arrays(rng), "sharded": openai_arrays(SHAPES["two-layers"], seed=7)}
    add("save_v2", root / "reader" / "many", reader["many"])
    add("sharded", root / "reader" / "sharded", reader["sharded"])

    (root / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run(
        [python, "-c", TF_WRITER, str(root / "jobs.json"), str(root / "listed.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = json.loads((root / "listed.json").read_text())
    return {"folders": folders, "reader": reader, "reader_root": root / "reader", "listed": listed}


def copy_of(tf_written, name, tmp_path) -> tuple[Path, dict, dict]:
    """A private copy of a written checkpoint folder (tests change files in it)."""
    folder, hp, arrays = tf_written["folders"][name]
    dest = tmp_path / name
    dest.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copyfile(file, dest / file.name)
    return dest, hp, arrays


# --------------------------------------------------------------------------------- conversion


def test_tensorflow_wrote_openais_layout(tf_written):
    folder, hp, arrays = tf_written["folders"]["two-layers"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint",
        "encoder.json",
        "hparams.json",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
        "model.ckpt.meta",
        "vocab.bpe",
    ]
    listed = tf_written["listed"][str(folder / "model.ckpt")]
    assert listed == sorted([name, list(a.shape)] for name, a in arrays.items())
    assert ["model/h0/attn/c_attn/w", [1, 32, 96]] in listed


@pytest.mark.parametrize("name", SHAPES)
def test_converted_model_matches_gpt2(name, tf_written, tmp_path, capfd):
    src, hp, arrays = copy_of(tf_written, name, tmp_path)
    out = conv.convert(src, tmp_path / "out")
    config = assert_model_folder(out, tmp_path / "out")
    files = {p.name for p in out.iterdir()}
    assert (
        config["vocab_size"],
        config["context_length"],
        config["emb_dim"],
        config["n_heads"],
        config["n_layers"],
    ) == (
        hp["n_vocab"],
        hp["n_ctx"],
        hp["n_embd"],
        hp["n_head"],
        hp["n_layer"],
    )
    assert config["qkv_bias"] is True and config["drop_rate"] == 0.0 and config["tie_word_embeddings"] is True
    assert config["layer_norm_epsilon"] == 1e-5
    assert config["eos_token_id"] == config["pad_token_id"] == hp["n_vocab"] - 1

    src_model = gpt2_reference(hp, arrays)
    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(ours, GPTScratchForCausalLM) and ours.dtype == torch.float32
    assert ours.out_head.weight is ours.model.tok_emb.weight  # tied: OpenAI has only wte
    x = prompts(hp["n_vocab"], length=hp["n_ctx"])  # the whole context
    with torch.no_grad():
        expected, got = src_model(x).logits, ours(x).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4

    assert_same_generations(
        src_model, ours, hp["n_vocab"], new_tokens=hp["n_ctx"] - 7
    )  # up to the full context

    err = capfd.readouterr().err
    if hp["n_vocab"] < 50257:  # GPT-2's tokenizer would give ids the model cannot embed
        assert not any("tokenizer" in f or f in ("vocab.json", "merges.txt") for f in files)
        assert "no tokenizer" in err
    else:
        tok = AutoTokenizer.from_pretrained(out)
        assert len(tok) == 50257 and tok.pad_token_id == 50256
        assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
        assert tok.decode([6109, 3626, 6100, 345]) == "Every effort moves you"
        assert ours.generation_config.eos_token_id == ours.generation_config.pad_token_id == 50256
        assert "warning" not in err


def test_cli_bfloat16_sharded(tf_written, tmp_path):
    src, hp, arrays = copy_of(tf_written, "two-layers", tmp_path)
    out = tmp_path / "nested" / "out"
    tensors = convert_sharded_bfloat16("convert_openai_gpt2", src, out, "20KB")
    d = hp["n_embd"]  # Q is the first third of OpenAI's fused kernel [1, d, 3d], as nn.Linear's [out, in]
    c_attn = torch.from_numpy(arrays["model/h1/attn/c_attn/w"][0])
    assert torch.equal(tensors["model.trf_blocks.1.att.W_query.weight"], c_attn[:, :d].T.to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"

    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    assert ours.dtype == torch.bfloat16
    x = prompts(hp["n_vocab"], length=20)
    with torch.no_grad():
        expected = gpt2_reference(hp, arrays).to(torch.bfloat16)(x).logits.float()
        got = ours(x).logits.float()
    assert (got - expected).abs().max().item() <= 0.1 * expected.abs().max().item()


def test_float16(tf_written, tmp_path):
    src, hp, arrays = copy_of(tf_written, "three-heads", tmp_path)
    out = conv.convert(src, tmp_path / "out", dtype="float16")
    ours = AutoModelForCausalLM.from_pretrained(out)
    assert ours.dtype == torch.float16
    wpe = torch.from_numpy(arrays["model/wpe"]).to(torch.float16)
    assert torch.equal(ours.model.pos_emb.weight, wpe)


def test_checkpoint_file_is_followed(tf_written, tmp_path):
    """The `checkpoint` file names the prefix (OpenAI's says "model.ckpt"); without it, model.ckpt."""
    src, hp, arrays = copy_of(tf_written, "one-wide-layer", tmp_path)
    for file in src.glob("model.ckpt.*"):
        file.rename(src / file.name.replace("model.ckpt", "renamed-ckpt"))
    (src / "checkpoint").write_text(
        'model_checkpoint_path: "renamed-ckpt"\nall_model_checkpoint_paths: "renamed-ckpt"\n'
    )
    out = conv.convert(src, tmp_path / "out")
    wte = load_file(out / "model.safetensors")["model.tok_emb.weight"]
    assert torch.equal(wte, torch.from_numpy(arrays["model/wte"]))

    src, _, _ = copy_of(tf_written, "two-layers", tmp_path / "second")
    (src / "checkpoint").unlink()
    (src / "model.ckpt.meta").unlink()  # the graph is not needed either
    conv.convert(src, tmp_path / "out2")


def test_output_folder_rules(tf_written, tmp_path):
    src, _, _ = copy_of(tf_written, "two-layers", tmp_path / "in")
    assert_output_folder_rules(
        lambda output, **options: conv.convert(src, output, **options),
        src,
        tmp_path,
        break_source=lambda: _truncate(src / DATA, 0.99),
        error="is truncated",
        replaces="would replace the input folder",
    )


# ------------------------------------------------------------------------------- bad inputs


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_hparams(folder: Path, **changes) -> None:
    hp = json.loads((folder / "hparams.json").read_text())
    hp.update(changes)
    for key, value in changes.items():
        if value is None:
            del hp[key]
    (folder / "hparams.json").write_text(json.dumps(hp))


DATA = "model.ckpt.data-00000-of-00001"

# name: (source checkpoint, how to break a copy of it or the --input to use, words the one line must hold)
BAD_INPUTS = {
    "missing-folder": ("two-layers", "does/not/exist", ["does/not/exist", "does not exist"]),
    "input-is-a-file": ("two-layers", lambda d: d / "hparams.json", ["hparams.json", "is a file"]),
    "no-hparams": ("two-layers", lambda d: (d / "hparams.json").unlink(), ["hparams.json", "not found"]),
    "no-index": (
        "two-layers",
        lambda d: (d / "model.ckpt.index").unlink(),
        ["model.ckpt.index", "not found"],
    ),
    "no-index-no-checkpoint-file": (
        "two-layers",
        lambda d: ((d / "model.ckpt.index").unlink(), (d / "checkpoint").unlink()),
        ["model.ckpt.index", "not found", "hparams.json"],
    ),
    "no-data-file": ("two-layers", lambda d: (d / DATA).unlink(), [DATA, "not found"]),
    "no-encoder-json": ("two-layers", lambda d: (d / "encoder.json").unlink(), ["encoder.json", "not found"]),
    "no-vocab-bpe": ("two-layers", lambda d: (d / "vocab.bpe").unlink(), ["vocab.bpe", "not found"]),
    "checkpoint-file-names-nothing": (
        "two-layers",
        lambda d: (d / "checkpoint").write_text('model_checkpoint_path: "model-99.ckpt"\n'),
        ["model-99.ckpt.index not found", "checkpoint names checkpoint model-99.ckpt"],
    ),
    "truncated-data": (
        "two-layers",
        lambda d: _truncate(d / DATA, 0.5),
        [DATA, "is truncated", "tensor `model/", "do not fit"],
    ),
    "empty-data": (
        "two-layers",
        lambda d: (d / DATA).write_bytes(b""),
        [DATA, "is truncated", "has 0 bytes"],
    ),
    "corrupt-data": (
        "two-layers",
        lambda d: _flip_byte(d / DATA, (d / DATA).stat().st_size // 2),
        [DATA, "corrupt", "tensor `model/", "crc32c"],
    ),
    "corrupt-index": (
        "two-layers",
        lambda d: _flip_byte(d / "model.ckpt.index", 40),
        ["model.ckpt.index", "corrupt", "crc32c"],
    ),
    "truncated-index": (
        "two-layers",
        lambda d: _truncate(d / "model.ckpt.index", 0.9),
        ["model.ckpt.index", "not a TensorFlow checkpoint index", "truncated"],
    ),
    "empty-index": (
        "two-layers",
        lambda d: (d / "model.ckpt.index").write_bytes(b""),
        ["model.ckpt.index", "not a TensorFlow checkpoint index", "0 bytes"],
    ),
    "hparams-not-json": (
        "two-layers",
        lambda d: (d / "hparams.json").write_text("{oops"),
        ["hparams.json", "not valid JSON"],
    ),
    "hparams-without-n_embd": (
        "two-layers",
        lambda d: _edit_hparams(d, n_embd=None),
        ["hparams.json", "no `n_embd`"],
    ),
    "hparams-n-layer-bomb": (  # refused from the index alone, before anything is sized by n_layer
        "two-layers",
        lambda d: _edit_hparams(d, n_layer=300_000_000),
        ["hparams.json says n_layer 300000000", "model.ckpt.index holds only", "(2 blocks)"],
    ),
    "hparams-not-integer": (
        "two-layers",
        lambda d: _edit_hparams(d, n_layer="2"),
        ["hparams.json", "`n_layer` is '2'", "positive integer"],
    ),
    "heads-do-not-divide": (
        "two-layers",
        lambda d: _edit_hparams(d, n_head=5),
        ["hparams.json", "divisible"],
    ),
    "n_embd-disagrees": (
        "two-layers",
        lambda d: _edit_hparams(d, n_embd=16, n_head=2),
        ["model.ckpt.index", "tensor `model/", "has shape", "expected", "n_embd=16"],
    ),
    "n_vocab-disagrees": (
        "two-layers",
        lambda d: _edit_hparams(d, n_vocab=101),
        ["model.ckpt.index", "`model/wte` has shape [100, 32], expected [101, 32]", "n_vocab=101"],
    ),
    "n_ctx-disagrees": (
        "two-layers",
        lambda d: _edit_hparams(d, n_ctx=1024),
        ["`model/wpe` has shape [32, 32], expected [1024, 32]"],
    ),
    "more-layers-in-hparams": (
        "two-layers",
        lambda d: _edit_hparams(d, n_layer=3),
        ["model.ckpt.index", "tensor `model/h2/", "is missing", "n_layer=3"],
    ),
    "more-layers-in-checkpoint": (
        "two-layers",
        lambda d: _edit_hparams(d, n_layer=1),
        ["model.ckpt.index", "unexpected tensor `model/h1/", "(12 unexpected in all)", "n_layer=1"],
    ),
    "unknown-tensor": ("extra-tensor", None, ["model.ckpt.index", "unexpected tensor `global_step`"]),
    "missing-tensor": (
        "missing-tensor",
        None,
        ["model.ckpt.index", "tensor `model/h1/mlp/c_fc/b` is missing (expected shape [128])"],
    ),
    "int-tensor": ("int-tensor", None, ["model.ckpt.index", "`model/wpe` has dtype int32", "float32"]),
    "encoder-json-not-json": (
        "gpt2-vocab",
        lambda d: (d / "encoder.json").write_text("{not json"),
        ["encoder.json", "not valid JSON"],
    ),
    "encoder-json-cut-short": (
        "gpt2-vocab",
        lambda d: (d / "encoder.json").write_text(json.dumps({"a": 0, "<|endoftext|>": 1})),
        ["encoder.json", "has 2 entries", "50257"],
    ),
}


def _bad_input(name, tf_written, tmp_path) -> tuple[str, list[str]]:
    checkpoint, breaks, words = BAD_INPUTS[name]
    if isinstance(breaks, str):
        return breaks, words
    folder, _, _ = copy_of(tf_written, checkpoint, tmp_path)
    changed = breaks(folder) if breaks is not None else None
    return str(changed if isinstance(changed, Path) else folder), words


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input(name, tf_written, tmp_path, capfd):
    if name == "corrupt-data" and tf_checkpoint.fast_crc32c() is None:
        pytest.skip("tensor checksums need google-crc32c (the tf-checkpoint extra)")
    source, words = _bad_input(name, tf_written, tmp_path)
    assert_main_fails_cleanly("convert_openai_gpt2", ["--input", source], words, tmp_path, capfd)


def test_bad_input_cli(tf_written, tmp_path):
    """The same, as a real process: no library warnings or tracebacks on stderr either."""
    source, words = _bad_input("truncated-data", tf_written, tmp_path)
    assert_process_fails_cleanly("convert_openai_gpt2", ["--input", source], words, tmp_path)


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS)
def test_bad_options(option, value, words, tf_written, tmp_path):
    src, _, _ = copy_of(tf_written, "two-layers", tmp_path)
    convert = lambda output, **options: conv.convert(src, output, **options)  # noqa: E731
    assert_bad_option_refused(convert, option, value, words, tmp_path / "out")


# ---------------------------------------------------------------------------------- the reader


def test_reader_matches_tensorflow(tf_written):
    """Every dtype, scalars, an empty tensor, and an index of several table blocks."""
    arrays = tf_written["reader"]["many"]
    prefix = tf_written["reader_root"] / "many"
    assert [[n, s] for n, s in tf_checkpoint.list_variables(prefix)] == tf_written["listed"][str(prefix)]
    loaded = tf_checkpoint.load_checkpoint(prefix)
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == np.asarray(array).dtype and loaded[name].shape == np.shape(array), name
        assert np.array_equal(loaded[name], array), name
    index = prefix.with_suffix(".index")
    data = index.read_bytes()  # the table's index block lists its data blocks
    footer = memoryview(data)[-tf_checkpoint.FOOTER_SIZE :]
    _, _, pos = tf_checkpoint._block_handle(footer, 0, 40, "footer")
    offset, size, _ = tf_checkpoint._block_handle(footer, pos, 40, "footer")
    blocks = list(tf_checkpoint._block_entries(tf_checkpoint._read_block(data, offset, size, index), index))
    assert len(blocks) >= 2


def test_reader_sharded_checkpoint(tf_written):
    arrays = tf_written["reader"]["sharded"]
    prefix = tf_written["reader_root"] / "sharded"
    with TFCheckpoint(prefix) as ckpt:
        assert ckpt.num_shards == 2
        assert [p.name for p in ckpt.data_paths] == [
            "sharded.data-00000-of-00002",
            "sharded.data-00001-of-00002",
        ]
        assert {info.shard for info in ckpt.tensors.values()} == {0, 1}
        for name, array in arrays.items():
            view = ckpt.read(name)
            assert not view.flags.writeable  # a view of the mapped file, not a copy
            assert np.array_equal(view, array)
            ckpt.release(name)  # its pages go back; reading again reads the file again
            assert np.array_equal(ckpt.read(name), array)


def test_reader_opens_a_folder_and_lists_like_tensorflow(tf_written):
    folder, _, arrays = tf_written["folders"]["three-heads"]
    listed = tf_checkpoint.list_variables(folder)  # via the `checkpoint` file (an absolute path)
    assert [[n, s] for n, s in listed] == tf_written["listed"][str(folder / "model.ckpt")]
    with TFCheckpoint(folder / "model.ckpt") as ckpt:
        assert ckpt.nbytes() == sum(a.nbytes for a in arrays.values())
        with pytest.raises(CheckpointError, match="has no tensor `nope`"):
            ckpt.read("nope")


def test_reader_without_a_fast_crc32c(tf_written, tmp_path, monkeypatch):
    """Without google-crc32c the data's checksums are not checked, but sizes still are."""
    monkeypatch.setattr(tf_checkpoint, "fast_crc32c", lambda: None)
    src, _, arrays = copy_of(tf_written, "two-layers", tmp_path)
    with TFCheckpoint(src / "model.ckpt") as ckpt:
        assert not ckpt.verifies_data
        assert np.array_equal(ckpt.read("model/wte"), arrays["model/wte"])
    _truncate(src / DATA, 0.8)
    with pytest.raises(CheckpointError, match="is truncated"), TFCheckpoint(src / "model.ckpt") as ckpt:
        ckpt.check_data_files()


def test_crc32c():
    assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert tf_checkpoint.crc32c(b"6789", tf_checkpoint.crc32c(b"12345")) == 0xE3069283
    fast = tf_checkpoint.fast_crc32c()
    if fast is not None:
        data = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8)
        assert fast(memoryview(data)) == tf_checkpoint.crc32c(data.tobytes())
    masked = ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8  # LevelDB's mask
    assert tf_checkpoint.unmask_crc(masked & 0xFFFFFFFF) == 0xE3069283


# ------------------------------------------------------------------------------ a large model


@pytest.mark.slow
def test_large_checkpoint_memory(shared_data, tmp_path):
    """A 355M-shaped checkpoint (1.4 GB, written by TensorFlow) converts with peak memory under
    twice its size; benchmarks/bench_convert.py measures the 1558M one the same way."""
    spec = importlib.util.spec_from_file_location("bench_convert", REPO / "benchmarks" / "bench_convert.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--shape", "355M", "--workdir", str(tmp_path), "--tf-python", tf_python()])
    assert result["peak_rss_over_checkpoint"] < 2.0, result
    assert "model.safetensors" in result["output_files"]
