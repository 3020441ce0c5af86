"""GPU benchmark: GPTScratchForCausalLM against GPT2LMHeadModel holding the same weights, for a lent GPU.

Not run on the CPU-only development machines; written to run unattended on a GPU machine with no
network (transformers 5.17 or newer, torch 2.4 or newer). Every section catches its own failure and
reports it as a row, so one missing kernel does not cost the others.

Sections:

* decode: batch-1 greedy generation, a `--prompt-len` (32) token prompt and `--new-tokens` (64) new
  tokens, in tokens per second:
    - GPT2LMHeadModel, default `generate` (SDPA, dynamic cache)
    - ours, default `generate` (SDPA, dynamic cache)
    - ours, `generate(cache_implementation="static")` with the forward compiled by
      `torch.compile(fullgraph=True)` through transformers' `CompileConfig` (mode `reduce-overhead`,
      i.e. CUDA graphs); the first call (compile) is timed apart.
  All three must produce the same tokens (bf16 may break near-ties; a mismatch is reported, not fatal).
* train: training tokens per second and MFU for the 124M model at context `--seq-len` (1024), batch
  `--batch-size`, bf16 autocast over float32 weights, AdamW, for each attention implementation that is
  installed: `sdpa`, `flash_attention_2` (needs the flash-attn package), `flex_attention`; and
  GPT2LMHeadModel with SDPA beside them. `--compile-train` also compiles the training forward.
  MFU = tokens/s x (6 N + 12 L d T) / peak bf16 FLOP/s (N parameters without the position embedding,
  L layers, d width, T context; PaLM's appendix B). The peak comes from `--peak-tflops` or a table of
  known cards (H100/H200 989, A100 312, L40S 362, L4 121 dense bf16 TFLOP/s); unknown: MFU not shown.

Usage (from the repository root):

    python benchmarks/bench_gpu.py                          # everything, H200-sized defaults
    python benchmarks/bench_gpu.py --sections decode --rounds 9
    python benchmarks/bench_gpu.py --sections train --batch-size 16 --compile-train --json gpu.json
    # code-path check on a CPU (numbers meaningless):
    python benchmarks/bench_gpu.py --device cpu --dtype float32 --preset tiny --seq-len 64 \\
        --batch-size 2 --train-steps 2 --warmup-steps 1 --new-tokens 4 --rounds 1 --no-compile
"""

import argparse
import datetime
import gc
import importlib.util
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import transformers  # noqa: E402
from bench_common import generate_call, greedy, sync  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from modeling_gpt_scratch import GPTScratchConfig, GPTScratchForCausalLM  # noqa: E402
from modeling_gpt_scratch.conversion import (  # noqa: E402
    config_from_gpt2,
    gpt2_config_from,
    gpt2_to_scratch_state_dict,
)

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def build_pair(preset, device, seed=0):
    """A seeded random GPT2LMHeadModel of the preset's shape and ours holding exactly its weights."""
    shape = GPTScratchConfig.from_preset(preset, drop_rate=0.0)
    torch.manual_seed(seed)
    gcfg = gpt2_config_from(shape)
    hf = GPT2LMHeadModel(gcfg)
    cfg = config_from_gpt2(gcfg, drop_rate=0.0)
    ours = GPTScratchForCausalLM(cfg)
    ours.load_state_dict(gpt2_to_scratch_state_dict(hf.state_dict(), cfg), strict=True)
    for model in (hf, ours):
        model.set_attn_implementation("sdpa")
        model.to(device).eval()
    return hf, ours


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------ decode


def bench_decode(args, device, dtype):
    from transformers import CompileConfig

    hf, ours = build_pair(args.preset, device)
    hf.to(dtype)
    ours.to(dtype)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 50256, (1, args.prompt_len), generator=gen).to(device)
    n = args.new_tokens
    common = greedy(prompt, n, ours.config.eos_token_id)
    compile_config = CompileConfig(fullgraph=True, mode=args.compile_mode)
    compile_config._compile_all_devices = True  # lets a CPU smoke run compile too
    gpt2_default, ours_default = generate_call(hf, common), generate_call(ours, common)
    ours_static_compiled = generate_call(
        ours, common, cache_implementation="static", compile_config=compile_config
    )

    runs = {"GPT2LMHeadModel, default generate": gpt2_default, "ours, default generate": ours_default}
    if args.compile:
        runs["ours, static cache + compile"] = ours_static_compiled
    rows, outputs, first_call = [], {}, {}
    for name, fn in runs.items():  # warm-up / compile
        try:
            first_call[name], outputs[name] = timed(fn, device)
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append({"run": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            traceback.print_exc()
    live = {name: fn for name, fn in runs.items() if name in outputs}
    times = {name: [] for name in live}
    for r in range(args.rounds):
        order = list(live) if r % 2 == 0 else list(live)[::-1]
        for name in order:
            gc.collect()
            times[name].append(timed(live[name], device)[0])
    reference = outputs.get("ours, default generate")
    for name in live:
        median = statistics.median(times[name])
        row = {"run": name, "median_s": median, "tokens_per_s": n / median, "first_call_s": first_call[name]}
        if reference is not None and not torch.equal(outputs[name], reference):
            row["note"] = "tokens differ from ours, default (near-tie under low precision?)"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- train


def available_attention(device):
    impls = ["sdpa"]
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        impls.append("flash_attention_2")
    try:
        import torch.nn.attention.flex_attention  # noqa: F401

        impls.append("flex_attention")
    except ImportError:
        pass
    return impls


def peak_flops(args, device):
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():  # longest names first would matter only for L4 vs L40S
        if key in name and not (key == "L4" and "L40" in name):
            return tflops * 1e12
    return None


def train_flops_per_token(config, seq_len, n_params):
    """6 N (forward + backward matmuls over the weights) + 12 L d T (attention scores and values)."""
    n = n_params - config.context_length * config.emb_dim  # the position embedding is a lookup
    return 6 * n + 12 * config.n_layers * config.emb_dim * seq_len


def bench_train_one(label, model, args, device, dtype, peak):
    model.train()
    if args.compile_train:
        model.forward = torch.compile(model.forward)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50256, (args.batch_size, args.seq_len), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(args.warmup_steps):
        step()
    sync(device)
    step_times = [timed(step, device)[0] for _ in range(args.train_steps)]
    median = statistics.median(step_times)
    tokens_per_s = args.batch_size * args.seq_len / median
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    shape = GPTScratchConfig(
        vocab_size=cfg.vocab_size,
        context_length=getattr(cfg, "context_length", getattr(cfg, "n_positions", 1024)),
        emb_dim=cfg.hidden_size,
        n_heads=cfg.num_attention_heads,
        n_layers=cfg.num_hidden_layers,
    )
    row = {"run": label, "median_step_s": median, "tokens_per_s": tokens_per_s}
    if peak:
        row["mfu"] = tokens_per_s * train_flops_per_token(shape, args.seq_len, n_params) / peak
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def bench_train(args, device, dtype):
    peak = peak_flops(args, device)
    rows = []
    runs = [(f"ours, {impl}", impl) for impl in available_attention(device)] + [
        ("GPT2LMHeadModel, sdpa", "hf")
    ]
    for label, impl in runs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            pair = build_pair(args.preset, device)
            model = pair[0] if impl == "hf" else pair[1]
            del pair
            if impl != "hf":
                model.set_attn_implementation(impl)
            rows.append(bench_train_one(label, model, args, device, dtype, peak))
            del model
        except Exception as exc:  # noqa: BLE001 - report and go on
            traceback.print_exc()
            rows.append({"run": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, peak


# ------------------------------------------------------------------------------------------ report


def machine(args, device):
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "dtype": args.dtype,
        "preset": args.preset,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["flash_attn"] = importlib.util.find_spec("flash_attn") is not None
    return info


def report(info, decode_rows, train_rows, peak, args):
    lines = ["## GPU benchmark: GPTScratchForCausalLM vs GPT2LMHeadModel (same weights)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    if decode_rows:
        lines += [
            "",
            f"### Decode, batch 1, {args.prompt_len}-token prompt, {args.new_tokens} new tokens "
            f"({args.rounds} alternating rounds, median)",
            "",
            "| run | median | tokens/s | first call (compile) | note |",
            "|---|---:|---:|---:|---|",
        ]
        for r in decode_rows:
            if "error" in r:
                lines.append(f"| {r['run']} | - | - | - | error: {r['error']} |")
            else:
                lines.append(
                    f"| {r['run']} | {r['median_s']:.3f} s | {r['tokens_per_s']:.1f} | {r['first_call_s']:.1f} s "
                    f"| {r.get('note', '')} |"
                )
    if train_rows:
        peak_text = f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown (pass --peak-tflops)"
        lines += [
            "",
            f"### Training, batch {args.batch_size} x {args.seq_len}, {args.dtype} autocast, AdamW "
            f"(median of {args.train_steps} steps after {args.warmup_steps} warm-up; peak {peak_text})",
            "",
            "| run | step | tokens/s | MFU | peak memory |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in train_rows:
            if "error" in r:
                lines.append(f"| {r['run']} | - | - | - | error: {r['error']} |")
            else:
                mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
                mem = f"{r['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in r else "n/a"
                lines.append(
                    f"| {r['run']} | {r['median_step_s'] * 1000:.1f} ms | {r['tokens_per_s']:,.0f} | {mfu} | {mem} |"
                )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--preset", default="gpt2-small", help="model shape (default gpt2-small, 124M)")
    p.add_argument("--sections", nargs="+", choices=("decode", "train"), default=["decode", "train"])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the static+compile decode"
    )
    p.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode for the decode step")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--compile-train", action="store_true", help="torch.compile the training forward")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the card")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "error: no CUDA device here; this benchmark is for a GPU machine (use --device cpu only to check it runs)"
        )
    dtype = getattr(torch, args.dtype)
    transformers.logging.set_verbosity_error()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    info = machine(args, device)
    decode_rows = bench_decode(args, device, dtype) if "decode" in args.sections else []
    train_rows, peak = bench_train(args, device, dtype) if "train" in args.sections else ([], None)
    text = report(info, decode_rows, train_rows, peak, args)
    print("\n" + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": info, "decode": decode_rows, "train": train_rows}, indent=2)
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
