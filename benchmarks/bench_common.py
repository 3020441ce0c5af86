"""What the timing scripts (bench_cpu.py, bench_gpu.py) share: the same greedy decode, timed the same way."""

import torch


def sync(device):
    """Wait for the device's queued work, so that a timer stops when the work is done."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def greedy(prompt, new_tokens, eos):
    """`generate`'s arguments for a greedy run of exactly `new_tokens` tokens: EOS cannot end it early,
    so every model and setting does the same work."""
    return dict(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=eos,
        eos_token_id=eos,
    )


def generate_call(model, kwargs, **extra):
    """A zero-argument callable that runs `model.generate(**kwargs, **extra)` without gradients."""

    def run():
        with torch.no_grad():
            return model.generate(**kwargs, **extra)

    return run
