"""Why cached generation trails GPT2LMHeadModel on a CPU: the weight layout of one-token matmuls.

Generating one token at a time turns every linear layer into a matrix-vector product that streams
its weights from memory. This times the feed-forward block of one 124M-shaped TransformerBlock on one
token, three ways, with the same weights:

* `nn.Linear` (ours, the book's): weights stored `[out, in]`, `F.linear`;
* `Conv1D` layout (GPT-2's): the same weights stored transposed, `[in, out]`, `torch.addmm`;
* GPT-2's own `GPT2MLP` module holding those weights.

Then the whole 124M model (`bench_cpu.py`'s pair, same weights): greedy generation of 64 tokens with
the KV cache by GPT2LMHeadModel, by ours, and by ours with every block's `nn.Linear` weight stored
column-major (the same `[out, in]` tensor and values, laid out like `Conv1D`: `w.t().contiguous().t()`).
That layout is not the model's default because torch's FSDP2 refuses non-contiguous parameters.

Rounds alternate the variants, medians are printed.

    python benchmarks/bench_decode_layout.py [--rounds 7] [--calls 300] [--generate_rounds 5]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from modeling_gpt_scratch import GPTScratchConfig  # noqa: E402
from modeling_gpt_scratch.modeling_gpt_scratch import FeedForward  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--generate_rounds", type=int, default=5, help="0 skips the whole-model part")
    args = p.parse_args()
    torch.manual_seed(0)

    ours = FeedForward(GPTScratchConfig.from_preset("gpt2-small")).eval()
    fc, proj = ours.layers[0], ours.layers[2]
    fc_t, proj_t = fc.weight.t().contiguous(), proj.weight.t().contiguous()  # [in, out]
    gpt2 = GPT2MLP(4 * 768, GPT2Config()).eval()
    with torch.no_grad():
        gpt2.c_fc.weight.copy_(fc_t)
        gpt2.c_fc.bias.copy_(fc.bias)
        gpt2.c_proj.weight.copy_(proj_t)
        gpt2.c_proj.bias.copy_(proj.bias)

    def conv1d_layout(x):
        h = F.gelu(torch.addmm(fc.bias, x.view(-1, 768), fc_t), approximate="tanh")
        return torch.addmm(proj.bias, h, proj_t)

    x = torch.randn(1, 1, 768)
    variants = {"nn.Linear [out, in] (ours)": ours, "Conv1D [in, out]": conv1d_layout, "GPT2MLP": gpt2}
    with torch.no_grad():
        ref = ours(x).view(-1)
        for name, f in variants.items():
            assert torch.allclose(f(x).view(-1), ref, atol=1e-4), name
        times = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                f = variants[name]
                for _ in range(20):
                    f(x)
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    f(x)
                times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
    print(
        f"feed-forward of one token, 768 -> 3072 -> 768, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.calls} calls"
    )
    base = statistics.median(times["nn.Linear [out, in] (ours)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med:8.0f} us   ({base / med:.2f}x ours' speed)")
    if args.generate_rounds:
        generation(args.generate_rounds)


def generation(rounds):
    from bench_cpu import build_models

    models = build_models()
    column_major = build_models(("ours",))["ours"]
    for block in column_major.model.trf_blocks:
        for module in block.modules():
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.t().contiguous().t()
    variants = {"GPT2LMHeadModel": models["hf"], "ours": models["ours"], "ours, column-major": column_major}
    ids = torch.randint(0, 50256, (1, 16), generator=torch.Generator().manual_seed(1))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=64, min_new_tokens=64, do_sample=False)
    times = {name: [] for name in variants}
    with torch.no_grad():
        outputs = {name: m.generate(ids, **kwargs) for name, m in variants.items()}  # warm-up
        assert all(torch.equal(o, outputs["GPT2LMHeadModel"]) for o in outputs.values()), "different tokens"
        for r in range(rounds):
            for name in list(variants) if r % 2 == 0 else list(reversed(variants)):
                t0 = time.perf_counter()
                variants[name].generate(ids, **kwargs)
                times[name].append(time.perf_counter() - t0)
    hf = statistics.median(times["GPT2LMHeadModel"])
    print(f"\ngreedy generation, 16 + 64 tokens, batch 1, KV cache, 124M, {rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med:8.3f} s    (speed ratio HF/this {hf / med:.2f})")


if __name__ == "__main__":
    main()
