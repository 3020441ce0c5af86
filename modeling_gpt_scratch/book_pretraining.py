"""Chapter 5's pretraining loop, randomness included, for our model: a run that prints the book's numbers.

The book's `train_model_simple` gets its losses from three sources of randomness, all the global
torch generator, used in this order:

1. the weights: `torch.manual_seed(123)` then `GPTModel(cfg)`, PyTorch's default initialization in
   module order (`book_init_` draws the same numbers into our model);
2. the data order: `DataLoader(shuffle=True)` draws a fresh seed from the global generator every time
   a pass over it starts (and every loader, shuffled or not, draws one more for its workers' base
   seed), with no reseeding after the model is built. Evaluation passes count: `evaluate_model`
   averages the first `eval_iter` (5) batches of a *new shuffled pass* over the training loader;
3. dropout, drawn in the model's module order (embedding dropout, then per block the attention
   weights' dropout and the two shortcut dropouts): our eager attention draws the same masks;
   `scaled_dot_product_attention` draws its own, so the loop runs the eager kernel.

`train_model_simple` below walks the same steps with torch's own `DataLoader`s (so the generator is
used exactly as the book uses it), our model, and the book's loss (`cross_entropy` over every
position of the `(input, target)` windows):

    model = book_init_(GPTScratchForCausalLM(config), 123)  # seeds, then draws the book's weights
    train_loader, val_loader = book_loaders(train_text, val_text, block_size=256, batch_size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    history = train_model_simple(model, train_loader, val_loader, optimizer, num_epochs=10)

Nothing may draw from the global generator between `book_init_` and the first training batch (the
Trainer's `set_seed`, a sampled generation, a shuffled pass), or the order differs from the book's.
`pretrain_book_exact` does the whole run over ready windows in that order; it is what
`examples/pretrain.py --book_exact` calls.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

BOOK_SEED = 123


def book_init_(model, seed: int | None = BOOK_SEED):
    """The book's untrained model: chapter 4 builds `GPTModel` after `torch.manual_seed(123)` with
    PyTorch's default initialization. Our modules are registered in the book's order (tok_emb,
    pos_emb, each block's W_query, W_key, W_value, out_proj, ff.layers.0, ff.layers.2, ...,
    out_head), so resetting them in that order after the same seed draws the very numbers the book's
    constructor draws, and leaves the generator where the book's leaves it. Returns `model`."""
    if seed is not None:
        torch.manual_seed(seed)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            if tied and module is output:
                continue  # a tied head is the token embedding
            module.reset_parameters()
        elif hasattr(module, "scale") and hasattr(module, "shift"):  # the book's LayerNorm
            nn.init.ones_(module.scale)
            nn.init.zeros_(module.shift)
    return model


def use_book_dropout(model):
    """Switch `model` to the eager attention kernel, whose attention dropout is the book's
    `nn.Dropout` on the softmax weights (same masks from the same generator state)."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        else:
            model.config._attn_implementation = "eager"
    return model


def book_loaders(train_text, val_text, *, block_size=256, stride=None, batch_size=2, tokenizer=None):
    """Chapter 5's loaders: windows of `block_size` tokens moved by `stride` (default: the block size),
    the training loader shuffled (its order drawn from the global generator at every pass) without
    its last partial batch, the validation loader in order with all its windows."""
    from .data import create_dataloader_v1

    stride = stride or block_size
    common = {"batch_size": batch_size, "max_length": block_size, "stride": stride, "tokenizer": tokenizer}
    train_loader = create_dataloader_v1(train_text, **common, shuffle=True, drop_last=True)
    val_loader = create_dataloader_v1(val_text, **common, shuffle=False, drop_last=False)
    return train_loader, val_loader


def calc_loss_batch(input_batch, target_batch, model, device):
    """The book's loss of one batch: cross-entropy of every position's logits against its target."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_ids=input_batch, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """The mean loss of the first `num_batches` batches of one new pass over `data_loader` (a
    shuffled loader draws its order for the pass, as in the book)."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """The book's evaluation: `eval_iter` batches of each loader, dropout off."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


@dataclass
class BookHistory:
    """What `train_model_simple` returns in the book, plus the step of each evaluation."""

    train_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    tokens_seen: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    step_losses: list = field(default_factory=list)  # every optimizer step's training loss


def book_log_line(epoch: int, step: int, train_loss: float, val_loss: float) -> str:
    """The line the book prints at each evaluation."""
    return f"Ep {epoch} (Step {step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"


def train_model_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    *,
    num_epochs: int,
    eval_freq: int = 5,
    eval_iter: int = 5,
    device=None,
    max_grad_norm: float | None = None,
    log=print,
    on_epoch_end=None,
    on_step=None,
) -> BookHistory:
    """Chapter 5's `train_model_simple` for our model: per batch zero_grad, loss, backward, step;
    every `eval_freq` steps `evaluate_model` and `log(book_log_line(...))`; after each epoch
    `on_epoch_end(epoch, model)` (the book prints a greedy sample there, which draws nothing).
    `max_grad_norm` clips every step (appendix D's clipping; the chapter 5 run has none);
    `on_step(step, loss)` sees each step's loss (1-based step; reading it draws nothing)."""
    device = device if device is not None else next(model.parameters()).device
    use_book_dropout(model)
    history = BookHistory()
    tokens_seen, global_step = 0, -1
    for epoch in range(1, num_epochs + 1):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            history.step_losses.append(loss.item())
            if on_step is not None:
                on_step(global_step + 1, history.step_losses[-1])
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.tokens_seen.append(tokens_seen)
                history.steps.append(global_step)
                history.epochs.append(epoch)
                if log is not None:
                    log(book_log_line(epoch, global_step, train_loss, val_loss))
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    return history


def pretrain_book_exact(
    model,
    train_set,
    val_set,
    *,
    seed: int = BOOK_SEED,
    batch_size: int = 2,
    learning_rate: float = 4e-4,
    weight_decay: float = 0.1,
    num_epochs: int = 10,
    eval_freq: int = 5,
    eval_iter: int | None = 5,
    max_grad_norm: float | None = None,
    device=None,
    sample=None,
    log=print,
    on_step=None,
) -> dict:
    """Chapter 5's whole run, randomness included, over ready windows (`SlidingWindowDataset`s, the
    book's `GPTDatasetV1` windows): `book_init_(model, seed)`, then at once the book's loaders
    (`DataLoader(shuffle=True, drop_last=True)` for training, in order for validation), plain AdamW on
    every parameter, and `train_model_simple`; after each epoch `log(sample(model))` (the book's greedy
    `generate_and_print_sample`, which must draw nothing). `eval_iter` None: every batch.

    Returns the run as examples/pretrain.py logs it: {"step_losses", "evals", "samples"}, each
    evaluation's `step` counted in steps done (the book prints the 0-based step, one less)."""
    from torch.utils.data import DataLoader

    book_init_(model, seed)  # from here to the first batch nothing else may draw from the generator
    if device is not None:
        model.to(device)  # moving draws nothing, as the book's model.to(device)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    samples, steps_per_epoch = [], len(train_loader)

    def on_epoch_end(epoch, model):
        if sample is not None:
            samples.append({"epoch": epoch, "step": epoch * steps_per_epoch, "sample": sample(model)})
            log(samples[-1]["sample"])

    history = train_model_simple(
        model, train_loader, val_loader, optimizer, num_epochs=num_epochs, eval_freq=eval_freq,
        eval_iter=eval_iter, device=device, max_grad_norm=max_grad_norm, log=log,
        on_epoch_end=on_epoch_end, on_step=on_step,
    )  # fmt: skip
    evals = [
        {"step": step + 1, "epoch": epoch, "tokens_seen": tokens, "train_loss": train, "val_loss": val}
        for step, epoch, tokens, train, val in zip(
            history.steps, history.epochs, history.tokens_seen, history.train_losses, history.val_losses,
            strict=True,
        )
    ]  # fmt: skip
    return {"step_losses": history.step_losses, "evals": evals, "samples": samples}


__all__ = [
    "BOOK_SEED",
    "book_init_",
    "use_book_dropout",
    "book_loaders",
    "calc_loss_batch",
    "calc_loss_loader",
    "evaluate_model",
    "BookHistory",
    "book_log_line",
    "train_model_simple",
    "pretrain_book_exact",
]
