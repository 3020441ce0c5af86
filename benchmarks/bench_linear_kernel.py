"""The kernel behind our CPU inference speed: `F.linear` (MKL) against oneDNN on the same weights.

Every `Linear` of the model keeps the book's contiguous `[out, in]` weight; without gradients on the CPU
it hands the product to oneDNN (`torch.ops.mkldnn._linear_pointwise`) instead of `F.linear`. This times
both on the 124M model's four weight shapes, for 1, 4, 32 and 1,024 tokens (one-token products are what
cached generation runs; 1,024 is a whole-sequence forward). Each shape gets enough distinct weights
(about 200 MB) that they stream from memory as they do in the model, not from the cache. The two
kernels alternate within every round; medians per product are printed, with the largest difference
between their results.

    python benchmarks/bench_linear_kernel.py [--rounds 5] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = {"W_query / out_proj": (768, 768), "ff.layers.0": (3072, 768), "ff.layers.2": (768, 3072)}
SHAPES["out_head"] = (50257, 768)
TOKENS = (1, 4, 32, 1024)


def onednn(x, w, b):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def per_product_ms(kernel, x, weights, bias):
    start = time.perf_counter()
    for w in weights:
        kernel(x, w, bias)
    return (time.perf_counter() - start) / len(weights) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.rounds} rounds\n")
    print("| weight | shape | tokens | F.linear ms | oneDNN ms | speed-up | max abs difference |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, (out_features, in_features) in SHAPES.items():
            count = max(1, 200_000_000 // (out_features * in_features * 4))
            weights = [torch.randn(out_features, in_features) * 0.02 for _ in range(count)]
            bias = torch.randn(out_features) * 0.02
            for tokens in TOKENS:
                x = torch.randn(1, tokens, in_features)
                diff = (onednn(x, weights[0], bias) - F.linear(x, weights[0], bias)).abs().max().item()
                times = {"F.linear": [], "oneDNN": []}
                for _ in range(args.rounds):
                    for label, kernel in (("F.linear", F.linear), ("oneDNN", onednn)):
                        times[label].append(per_product_ms(kernel, x, weights, bias))
                mkl, dnn = (statistics.median(times[k]) for k in ("F.linear", "oneDNN"))
                print(
                    f"| {name} | {out_features}x{in_features} | {tokens} | {mkl:.3f} | {dnn:.3f} "
                    f"| {mkl / dnn:.2f} | {diff:.1e} |",
                    flush=True,
                )
            del weights


if __name__ == "__main__":
    main()
