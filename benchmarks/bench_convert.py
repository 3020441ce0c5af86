"""Time and peak memory of `conversion/convert_openai_gpt2.py` on a checkpoint of a GPT-2 release's shape.

1. TensorFlow writes a checkpoint exactly as OpenAI's GPT-2 release is laid out (variables in
   tf.compat.v1 scopes `model/h{i}/attn/c_attn/w`..., saved by a tf.compat.v1 `Saver`: `checkpoint`,
   `model.ckpt.index`, `model.ckpt.data-00000-of-00001`, `model.ckpt.meta`), with random weights,
   plus the release's `hparams.json` and the tokenizer files `encoder.json`/`vocab.bpe` (copied from
   $GPT_SCRATCH_SHARED_DATA/gpt2_tokenizer/openai). It runs in its own process, which ends before
   the conversion starts.
2. The converter runs as a command-line process, exactly as a user runs it. Its wall time and its
   peak resident memory (the kernel's high-water mark, `ru_maxrss` from `wait4`, which counts the
   memory-mapped checkpoint pages the process holds as well as its own allocations) are measured.
3. A few output tensors are compared with the checkpoint's, and the output is deleted (the
   checkpoint too, unless --keep).

Usage (from the repository root; TensorFlow in this environment, `pip install -e '.[test-tf]'`, or
another interpreter with it given by --tf-python; on an offline machine source
../shared/offline/env.sh first):

    python benchmarks/bench_convert.py                       # 1558M, float32 (6.2 GB on disk, ~7 GB RAM)
    python benchmarks/bench_convert.py --shape 124M --dtype bfloat16 --workdir /tmp/bench
    python benchmarks/bench_convert.py --keep --json out/bench_convert.json

The page cache is warm (the checkpoint was just written); pass --drop-caches (root only) to read it
from disk instead.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "conversion" / "convert_openai_gpt2.py"

# OpenAI's hparams.json of each release.
RELEASES = {
    "124M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12},
    "355M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1024, "n_head": 16, "n_layer": 24},
    "774M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1280, "n_head": 20, "n_layer": 36},
    "1558M": {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 1600, "n_head": 25, "n_layer": 48},
}

# argv: folder, hparams as JSON. Builds the graph as OpenAI's model.py names it (random values:
# weights N(0, 0.02), gains 1, biases 0) and saves it with tf.compat.v1's Saver.
TF_WRITER = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

folder, hp = sys.argv[1], json.loads(sys.argv[2])
d = hp["n_embd"]
v1 = tf.compat.v1
normal = v1.random_normal_initializer(stddev=0.02, seed=0)
graph = tf.Graph()
with graph.as_default(), v1.variable_scope("model"):
    v1.get_variable("wpe", [hp["n_ctx"], d], initializer=normal)
    v1.get_variable("wte", [hp["n_vocab"], d], initializer=normal)
    for layer in range(hp["n_layer"]):
        with v1.variable_scope(f"h{layer}"):
            for norm in ("ln_1", "ln_2"):
                with v1.variable_scope(norm):
                    v1.get_variable("g", [d], initializer=v1.ones_initializer())
                    v1.get_variable("b", [d], initializer=v1.zeros_initializer())
            for scope, n_in, n_out in (("attn/c_attn", d, 3 * d), ("attn/c_proj", d, d),
                                       ("mlp/c_fc", d, 4 * d), ("mlp/c_proj", 4 * d, d)):
                outer, inner = scope.split("/")
                with v1.variable_scope(outer), v1.variable_scope(inner):
                    v1.get_variable("w", [1, n_in, n_out], initializer=normal)
                    v1.get_variable("b", [n_out], initializer=v1.zeros_initializer())
    with v1.variable_scope("ln_f"):
        v1.get_variable("g", [d], initializer=v1.ones_initializer())
        v1.get_variable("b", [d], initializer=v1.zeros_initializer())
    saver = v1.train.Saver()
    with v1.Session(graph=graph) as session:
        session.run(v1.global_variables_initializer())
        saver.save(session, os.path.join(folder, "model.ckpt"))
with open(os.path.join(folder, "hparams.json"), "w") as f:
    json.dump(hp, f)
"""


def tf_python(given: str | None) -> str:
    if given:
        return given
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        sys.exit(
            "TensorFlow is needed to write the checkpoint: pip install -e '.[test-tf]', or pass --tf-python"
        )
    return sys.executable


def shared_tokenizer_files() -> Path:
    root = Path(os.environ.get("GPT_SCRATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
    folder = root / "gpt2_tokenizer" / "openai"
    if not (folder / "encoder.json").is_file():
        sys.exit(
            f"{folder}/encoder.json not found: set GPT_SCRATCH_SHARED_DATA (source ../shared/offline/env.sh)"
        )
    return folder


def write_checkpoint(folder: Path, hparams: dict, python: str) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([python, "-c", TF_WRITER, str(folder), json.dumps(hparams)], check=True, env=env)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(shared_tokenizer_files() / name, folder / name)
    return time.perf_counter() - start


def run_measured(command: list[str], log: Path) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS in bytes) of one child process."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, wall, usage.ru_maxrss * 1024  # Linux reports KiB


def spot_check(checkpoint: Path, output: Path, hparams: dict) -> None:
    """wte and layer 0's Q kernel in the output equal the checkpoint's (cast to the output dtype)."""
    import torch
    from safetensors import safe_open

    sys.path.insert(0, str(REPO))
    from modeling_gpt_scratch.conversion.tf_checkpoint import TFCheckpoint

    d = hparams["n_embd"]
    wanted = {"model.tok_emb.weight": None, "model.trf_blocks.0.att.W_query.weight": None}
    for shard in sorted(output.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for name in wanted:
                if name in f.keys():
                    wanted[name] = f.get_tensor(name)
    with TFCheckpoint(checkpoint / "model.ckpt") as ckpt:
        wte = torch.from_numpy(ckpt.read("model/wte").copy())
        q = torch.from_numpy(ckpt.read("model/h0/attn/c_attn/w")[0, :, :d].T.copy())
    for name, expected in (("model.tok_emb.weight", wte), ("model.trf_blocks.0.att.W_query.weight", q)):
        got = wanted[name]
        assert got is not None and torch.equal(got, expected.to(got.dtype)), name


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1558M", choices=list(RELEASES))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max_shard_size", default="5GB")
    parser.add_argument("--workdir", default="/tmp/gpt-scratch-bench-convert", type=Path)
    parser.add_argument("--tf-python", default=None, help="a Python with TensorFlow (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint (reused by the next run)")
    parser.add_argument(
        "--drop-caches", action="store_true", help="drop the page cache before converting (root)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    hparams = RELEASES[args.shape]
    checkpoint = args.workdir / args.shape
    output = args.workdir / f"{args.shape}-converted-{args.dtype}"
    shutil.rmtree(output, ignore_errors=True)
    written = None
    if not (checkpoint / "model.ckpt.index").is_file() or not (checkpoint / "hparams.json").is_file():
        print(f"writing a {args.shape}-shaped checkpoint with TensorFlow to {checkpoint} ...", flush=True)
        written = write_checkpoint(checkpoint, hparams, tf_python(args.tf_python))
    ckpt_bytes = sum(p.stat().st_size for p in checkpoint.glob("model.ckpt.data-*"))
    if args.drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")

    command = [
        sys.executable,
        str(SCRIPT),
        "--input",
        str(checkpoint),
        "--output",
        str(output),
        "--dtype",
        args.dtype,
        "--max_shard_size",
        args.max_shard_size,
    ]
    print("measuring:", " ".join(command), flush=True)
    log = args.workdir / f"convert-{args.shape}-{args.dtype}.log"
    rc, wall, peak = run_measured(command, log)
    if rc != 0:
        sys.exit(f"the conversion failed (exit {rc}); see {log}:\n{log.read_text()[-3000:]}")
    out_bytes = sum(p.stat().st_size for p in output.glob("*.safetensors"))
    spot_check(checkpoint, output, hparams)

    result = {
        "shape": args.shape,
        "hparams": hparams,
        "dtype": args.dtype,
        "checkpoint_bytes": ckpt_bytes,
        "write_checkpoint_s": None if written is None else round(written, 1),
        "convert_wall_s": round(wall, 1),
        "peak_rss_bytes": peak,
        "peak_rss_over_checkpoint": round(peak / ckpt_bytes, 2),
        "output_safetensors_bytes": out_bytes,
        "output_files": sorted(p.name for p in output.iterdir()),
        "page_cache": "dropped" if args.drop_caches else "warm",
        "cpus": os.cpu_count(),
        "command": " ".join(command),
    }
    gib = 1 << 30
    print(
        f"{args.shape} ({ckpt_bytes / gib:.2f} GiB checkpoint) -> {args.dtype}: {wall:.1f} s, "
        f"peak RSS {peak / gib:.2f} GiB = {peak / ckpt_bytes:.2f}x the checkpoint "
        f"({out_bytes / gib:.2f} GiB of safetensors: {', '.join(result['output_files'])})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(output, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
