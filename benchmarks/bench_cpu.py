"""Time GPTScratchForCausalLM against transformers' GPT2LMHeadModel holding the same weights.

Both models have the 124M GPT-2 shape (`GPT2Config()` defaults: n_embd 768, 12 layers, 12 heads,
vocab 50257, n_positions 1024), both use SDPA attention, both hold exactly the same weights (a
randomly initialized `GPT2LMHeadModel` converted with `modeling_gpt_scratch.conversion`), and all
dropout probabilities are 0. Before any timing the script asserts that the two models' float32
logits agree (max abs diff < 1e-4), so the comparison is of equal models.

Tasks (`--tasks`, default all four, run in this order):

* `forward`: `model(input_ids, use_cache=False)` on batch_size x seq_len tokens (default 4 x 256),
  under `torch.no_grad()`, model in `eval()`.
* `train`: one training step, model in `train()` mode (dropout is 0, so train and eval compute the
  same thing): forward with `labels=input_ids` (the loss), `loss.backward()`, `AdamW.step()`,
  `zero_grad(set_to_none=True)`. Each model has its own AdamW (lr 1e-4), created before timing.
  It runs last because it changes the weights (both models get the same updates).
* `generate`: greedy `generate` of new_tokens (64) new tokens with the KV cache, batch 1, a
  16-token prompt, `min_new_tokens == max_new_tokens` so EOS cannot stop it early.
* `generate_nocache`: the same generation with `use_cache=False` (every step re-reads the whole
  sequence). Both models run it, so the ratio compares like with like; its times set beside the
  `generate` row show what the cache buys.

* `decode_compiled` (ours only): batch-1 greedy decode of new_tokens (64) after a 32-token prompt,
  our default `generate` (eager, dynamic cache) against `generate(cache_implementation="static")` with
  the forward compiled by `torch.compile(fullgraph=True)` (transformers' `CompileConfig`; on a CPU its
  `_compile_all_devices` switch lets generate compile). The first compiled call (tracing + inductor's
  C++ build) is timed and reported apart as the compile time; the rounds then alternate the two. Both
  must produce the same tokens.

Timing: one warm-up call per model, then `--rounds` rounds (default 5). In each round HF and ours
each run once, alternating, and the starting model flips every round (HF, ours | ours, HF | ...),
so slow drift of the machine (thermal, other processes) falls on both alike. Reported: the median
seconds per call for each model and the speed ratio HF_time / our_time (> 1: ours is faster).
On CUDA every timed call is bracketed by `torch.cuda.synchronize()`.

Peak memory:

* CPU: each (model, task) pair is measured in a fresh process (multiprocessing "spawn") that
  builds only that one model, sets up the task (inputs, optimizer) and runs one warm-up call, so
  one-time costs (library init, AdamW's moment buffers) are part of the baseline. It then
  collects garbage, hands freed heap pages back to the OS (glibc `malloc_trim(0)`, so memory kept
  by the allocator from the warm-up does not hide the next call's needs), resets the kernel's
  peak-RSS counter (`echo 5 > /proc/self/clear_refs`, which resets VmHWM), reads the current RSS as
  the baseline, runs one more call and reads VmHWM. Reported: VmHWM - baseline, i.e. the peak
  resident memory one steady-state call adds on top of the loaded model (activations, gradients,
  the KV cache, logits, temporaries). The baseline (process + weights [+ AdamW state]) is printed
  too. Where /proc/self/clear_refs cannot be written (not Linux), a thread samples the RSS with
  psutil every 0.5 ms instead, which can miss very short peaks; the method used is printed.
* CUDA: in-process, `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus
  `memory_allocated()` before the call: the peak tensor memory one call adds (exact, allocator
  cache excluded).

Usage (from the repository root; on an offline machine source ../shared/offline/env.sh first):

    python benchmarks/bench_cpu.py                      # everything, 5 rounds
    python benchmarks/bench_cpu.py --rounds 3 --threads 2 --json out/bench.json
    python benchmarks/bench_cpu.py --tasks forward generate --no-memory
    python benchmarks/bench_cpu.py --device cuda --dtype bfloat16
    python benchmarks/bench_cpu.py --tasks train --rounds 1 --profile   # top ops per model
"""

import argparse
import ctypes
import datetime
import gc
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import transformers  # noqa: E402
from bench_common import generate_call, greedy, sync  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from modeling_gpt_scratch import GPTScratchForCausalLM  # noqa: E402
from modeling_gpt_scratch.conversion import config_from_gpt2, gpt2_to_scratch_state_dict  # noqa: E402

TASKS = (
    "forward",
    "generate",
    "generate_nocache",
    "decode_compiled",
    "train",
)  # train last: it changes weights
MODELS = ("hf", "ours")
LABELS = {"hf": "GPT2LMHeadModel", "ours": "GPTScratchForCausalLM"}
TASK_LABELS = {
    "forward": "forward {b}x{t}, no_grad",
    "train": "train step {b}x{t} (fwd+loss, bwd, AdamW)",
    "generate": "generate {n} tokens, KV cache",
    "generate_nocache": "generate {n} tokens, use_cache=False",
}
SEED = 0
PROMPT_LEN = 16
COMPILED_PROMPT_LEN = 32
LOGITS_ATOL = 1e-4


# --------------------------------------------------------------------------------------------------
# Models and tasks
# --------------------------------------------------------------------------------------------------


def gpt2_config() -> GPT2Config:
    """GPT-2 124M (the `GPT2Config()` defaults) with every dropout off."""
    return GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)


def build_models(which=MODELS, device="cpu", dtype=torch.float32):
    """The requested models with identical weights: a seeded random GPT2LMHeadModel and ours
    loaded from its state dict. Always built in float32; cast afterwards."""
    torch.manual_seed(SEED)
    gcfg = gpt2_config()
    hf = GPT2LMHeadModel(gcfg)
    hf.set_attn_implementation("sdpa")
    models = {}
    if "ours" in which:
        cfg = config_from_gpt2(gcfg, drop_rate=0.0)
        ours = GPTScratchForCausalLM(cfg)
        ours.set_attn_implementation("sdpa")
        result = ours.load_state_dict(gpt2_to_scratch_state_dict(hf.state_dict(), cfg), strict=True)
        assert not result.missing_keys and not result.unexpected_keys, result
        assert ours.out_head.weight is ours.model.tok_emb.weight, "output head is not tied"
        models["ours"] = ours
    if "hf" in which:
        models["hf"] = hf
    else:
        del hf
    for name, model in models.items():
        assert model.config._attn_implementation == "sdpa", (name, model.config._attn_implementation)
        model.to(device=device, dtype=dtype)
        model.eval()
    gc.collect()
    return models


def make_inputs(args, device):
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 50256, (args.batch_size, args.seq_len), generator=gen)  # no <|endoftext|>
    prompt = torch.randint(0, 50256, (1, PROMPT_LEN), generator=gen)
    return ids.to(device), prompt.to(device)


def make_task(model, task, args, device):
    """A zero-argument callable that runs `task` once on `model` (model mode and optimizer set up here)."""
    ids, prompt = make_inputs(args, device)
    if task == "forward":
        model.eval()

        def run():
            with torch.no_grad():
                return model(input_ids=ids, use_cache=False).logits

        return run

    if task == "train":
        model.train()  # every dropout probability is 0
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        opt.zero_grad(set_to_none=True)

        def run():
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        run.optimizer = opt
        return run

    if task in ("generate", "generate_nocache"):
        model.eval()
        kwargs = greedy(prompt, args.new_tokens, model.config.eos_token_id)

        def run():
            with torch.no_grad():
                out = model.generate(**kwargs, use_cache=task == "generate")
            assert out.shape[1] == PROMPT_LEN + args.new_tokens, out.shape
            return out

        return run

    raise ValueError(f"unknown task {task!r}")


def check_equal_models(models, args, device):
    """Float32 logits of the two models on the forward batch must agree within LOGITS_ATOL."""
    ids, prompt = make_inputs(args, device)
    with torch.no_grad():
        logits = {name: m(input_ids=ids, use_cache=False).logits.float() for name, m in models.items()}
    diff = (logits["hf"] - logits["ours"]).abs().max().item()
    assert diff < LOGITS_ATOL, f"logits differ by {diff:.3g} >= {LOGITS_ATOL}: the models are not equal"
    return diff


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def alternate_rounds(runs, label, rounds, device):
    """Time each of `runs` (name -> callable) once per round, the starting one flipped every round, so
    slow drift of the machine falls on all alike. Returns name -> list of seconds."""
    names = list(runs)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            runs[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        print(
            f"  {label} round {r + 1}/{rounds}: "
            + ", ".join(f"{name} {times[name][-1]:.3f}s" for name in order),
            flush=True,
        )
    return times


def time_task(models, task, args, device):
    runs = {name: make_task(models[name], task, args, device) for name in MODELS}
    outputs = {}
    for name in MODELS:  # warm-up
        outputs[name] = runs[name]()
        sync(device)
    times = alternate_rounds(runs, task, args.rounds, device)
    note = None
    if task.startswith("generate") and not torch.equal(outputs["hf"], outputs["ours"]):
        note = "greedy outputs differ (near-tie in argmax?)"
    for run in runs.values():  # free optimizer state before the next task
        if hasattr(run, "optimizer"):
            del run.optimizer
    return times, note


def time_compiled_decode(model, args, device):
    """Ours, eager with the dynamic cache vs static cache + compiled forward: compile time, then
    alternating rounds. Returns (times, compile_s, note)."""
    from transformers import CompileConfig

    gen = torch.Generator().manual_seed(SEED + 2)
    prompt = torch.randint(0, 50256, (1, COMPILED_PROMPT_LEN), generator=gen).to(device)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # generate compiles only on accelerators otherwise
    common = greedy(prompt, args.new_tokens, model.config.eos_token_id)
    model.eval()
    eager = generate_call(model, common)
    compiled = generate_call(model, common, cache_implementation="static", compile_config=compile_config)
    runs = {"eager_dynamic": eager, "static_compiled": compiled}
    reference = eager()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    first = compiled()  # tracing and code generation happen here
    sync(device)
    compile_s = time.perf_counter() - t0
    print(f"  decode_compiled: first static+compiled call (compile included) {compile_s:.1f}s", flush=True)
    note = None if torch.equal(first, reference) else "static+compiled tokens differ from eager"
    times = alternate_rounds(runs, "decode_compiled", args.rounds, device)
    return times, compile_s, note


def profile_task(models, task, args, device, row_limit=15):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if str(device).startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    sort_by = "self_cuda_time_total" if str(device).startswith("cuda") else "self_cpu_time_total"
    for name in MODELS:
        run = make_task(models[name], task, args, device)
        run()  # warm-up
        sync(device)
        with profile(activities=activities) as prof:
            run()
            sync(device)
        print(f"\n### profile: {task}, {LABELS[name]}\n")
        print(prof.key_averages().table(sort_by=sort_by, row_limit=row_limit))


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss():
    """Reset the kernel's VmHWM; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler:
    """Fallback: max RSS seen by a thread polling psutil every 0.5 ms."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.0005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _memory_child(arg_dict, name, task):
    """Runs in a fresh spawned process: peak RSS growth of one call of `task` on model `name`."""
    args = argparse.Namespace(**arg_dict)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    model = build_models((name,), "cpu", getattr(torch, args.dtype))[name]
    run = make_task(model, task, args, "cpu")
    run()  # warm-up: one-time allocations (AdamW state, library caches) go into the baseline
    gc.collect()
    _malloc_trim()
    if _reset_peak_rss():
        baseline = _status_kib("VmRSS") * 1024
        run()
        peak = _status_kib("VmHWM") * 1024
        method = "VmHWM after clear_refs"
    else:
        import psutil

        baseline = psutil.Process().memory_info().rss
        with _RssSampler() as sampler:
            run()
        peak = sampler.peak
        method = "psutil RSS sampling (0.5 ms)"
    return {"baseline_bytes": baseline, "peak_growth_bytes": max(peak - baseline, 0), "method": method}


def measure_memory_cpu(task, args, ctx, first):
    result = {}
    order = MODELS if first == "hf" else MODELS[::-1]
    for name in order:
        with ctx.Pool(processes=1, maxtasksperchild=1) as pool:
            result[name] = pool.apply(_memory_child, (vars(args), name, task))
        print(f"  {task} memory {name}: +{result[name]['peak_growth_bytes'] / 2**20:.0f} MiB", flush=True)
    return result


def measure_memory_cuda(models, task, args, device):
    result = {}
    for name in MODELS:
        run = make_task(models[name], task, args, device)
        run()
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        result[name] = {
            "baseline_bytes": baseline,
            "peak_growth_bytes": peak - baseline,
            "method": "torch.cuda.max_memory_allocated",
        }
        if hasattr(run, "optimizer"):
            del run.optimizer
        del run
        gc.collect()
    return result


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(args, device):
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": args.dtype,
    }
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def fmt_mib(mem):
    return f"{mem['peak_growth_bytes'] / 2**20:,.0f} MiB" if mem else "n/a"


def report(args, info, diff, results):
    lines = ["## GPTScratchForCausalLM vs GPT2LMHeadModel (same weights, SDPA, 124M)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- shape: batch {args.batch_size} x {args.seq_len} tokens (forward, train); prompt {PROMPT_LEN} + "
        f"{args.new_tokens} new tokens, batch 1 (generate)",
        f"- rounds: {args.rounds} (alternating, starting model flipped every round), median seconds per call",
        f"- max |logits HF - ours| (float32): {diff:.2e}",
        "",
        "| task | GPT2LMHeadModel median | ours median | speed ratio (HF/ours) | peak mem HF | peak mem ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    compiled = results.pop("decode_compiled", None)
    for task, res in results.items():
        label = TASK_LABELS[task].format(b=args.batch_size, t=args.seq_len, n=args.new_tokens)
        hf, ours = res["median_s"]["hf"], res["median_s"]["ours"]
        mem = res.get("memory") or {}
        lines.append(
            f"| {label} | {hf:.3f} s | {ours:.3f} s | {hf / ours:.2f} | "
            f"{fmt_mib(mem.get('hf'))} | {fmt_mib(mem.get('ours'))} |"
        )
    lines.append("")
    lines.append(
        "Speed ratio > 1: ours is faster. Peak mem: peak growth above the loaded model during one call."
    )
    methods = {m["method"] for r in results.values() for m in (r.get("memory") or {}).values()}
    if methods:
        lines.append(f"Memory method: {', '.join(sorted(methods))}. Baselines (before the call):")
        for task, res in results.items():
            mem = res.get("memory") or {}
            if mem:
                parts = [f"{n} {mem[n]['baseline_bytes'] / 2**20:,.0f} MiB" for n in MODELS if n in mem]
                lines.append(f"- {task}: {', '.join(parts)}")
    if compiled:
        eager, static = compiled["median_s"]["eager_dynamic"], compiled["median_s"]["static_compiled"]
        n = args.new_tokens
        lines += [
            "",
            f"### Ours: static cache + compiled decode (batch 1, {COMPILED_PROMPT_LEN}-token prompt, {n} new tokens)",
            "",
            "| generate | median | tokens/s | speed-up |",
            "|---|---:|---:|---:|",
            f"| eager, dynamic cache (default) | {eager:.3f} s | {n / eager:.1f} | 1.00 |",
            f"| static cache + torch.compile(fullgraph=True) | {static:.3f} s | {n / static:.1f} | "
            f"{eager / static:.2f} |",
            "",
            f"Compile time (first static+compiled call, not in the medians): {compiled['compile_s']:.1f} s.",
        ]
        results["decode_compiled"] = compiled
    notes = [f"- {task}: {res['note']}" for task, res in results.items() if res.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per task (>= 3 recommended)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)"
    )
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurements"
    )
    p.add_argument(
        "--profile", action="store_true", help="also print torch.profiler's top ops per task and model"
    )
    p.add_argument("--json", type=Path, default=None, help="write all results (raw times included) here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.seq_len > 1024 or PROMPT_LEN + args.new_tokens > 1024:
        p.error("sequences must fit in n_positions = 1024")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and dtype == torch.float16:
        print("warning: float16 on CPU is slow and not what this benchmark is meant for", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    tasks = [t for t in TASKS if t in args.tasks]

    models = build_models(MODELS, device, torch.float32)
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert n_params["hf"] == n_params["ours"], n_params
    diff = check_equal_models(models, args, device)
    if dtype != torch.float32:
        for m in models.values():
            m.to(dtype)
    info = machine_info(args, device)
    info["parameters"] = f"{n_params['hf']:,}"
    print(f"models equal: max |logits diff| = {diff:.2e}; {n_params['hf']:,} parameters each", flush=True)

    results = {}
    ctx = mp.get_context("spawn")
    for i, task in enumerate(tasks):
        if task == "decode_compiled":
            times, compile_s, note = time_compiled_decode(models["ours"], args, device)
            results[task] = {
                "times_s": times,
                "median_s": {name: statistics.median(t) for name, t in times.items()},
                "compile_s": compile_s,
                "note": note,
            }
            continue
        times, note = time_task(models, task, args, device)
        results[task] = {
            "times_s": times,
            "median_s": {name: statistics.median(t) for name, t in times.items()},
            "note": note,
        }
        if args.profile:
            profile_task(models, task, args, device)
        if args.memory:
            if device.type == "cuda":
                results[task]["memory"] = measure_memory_cuda(models, task, args, device)
            else:
                results[task]["memory"] = measure_memory_cpu(task, args, ctx, first=MODELS[i % 2])

    text = report(args, info, diff, results)
    print("\n" + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "max_abs_logits_diff": diff,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
