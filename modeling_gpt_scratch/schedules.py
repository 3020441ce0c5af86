"""Appendix D's training schedule: linear warm-up, cosine decay, gradient clipping after warm-up.

The book's `train_model` (appendix D) sets the learning rate before every optimizer step from the
0-based step number `step`, with the optimizer's own learning rate as the peak:

    step <  warmup_steps:  initial_lr + step * (peak_lr - initial_lr) / warmup_steps
    step >= warmup_steps:  min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress)),
                           progress = (step - warmup_steps) / (total_steps - warmup_steps)

so it starts at `initial_lr` (3e-5), not at 0, and ends near `min_lr` (1e-6), not at 0. It clips the
gradient norm to 1.0 only once warm-up is over: from step `warmup_steps` in the book's code today,
from step `warmup_steps + 1` in the printed book (`orig_book_version=True`).

    from modeling_gpt_scratch.schedules import book_appendix_d_scheduler, ClipAfterWarmupCallback

    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.1)
    scheduler = book_appendix_d_scheduler(optimizer, warmup_steps=w, total_steps=n)
    trainer = Trainer(..., optimizers=(optimizer, scheduler), callbacks=[ClipAfterWarmupCallback(w)])
"""

import math

import torch
from transformers import TrainerCallback

BOOK_INITIAL_LR = 3e-5  # appendix D's train_model defaults
BOOK_MIN_LR = 1e-6
BOOK_MAX_GRAD_NORM = 1.0


def book_appendix_d_lr(
    step: int, *, peak_lr: float, initial_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """The learning rate of 0-based optimizer step `step`, computed as the book computes it (same
    floating-point operations, so the values are equal, not merely close)."""
    if step < warmup_steps:
        return initial_lr + step * ((peak_lr - initial_lr) / warmup_steps)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def book_clips_gradients(step: int, warmup_steps: int, orig_book_version: bool = False) -> bool:
    """Whether the book clips the gradients of 0-based step `step`: once warm-up is over."""
    return step > warmup_steps if orig_book_version else step >= warmup_steps


def check_schedule(warmup_steps: int, total_steps: int) -> None:
    """A clear error for a warm-up the book's formula cannot take (it divides by both lengths)."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
        raise ValueError(f"appendix D's schedule needs warmup_steps >= 1, got {warmup_steps!r}")
    if not isinstance(total_steps, int) or total_steps <= warmup_steps:
        raise ValueError(
            f"appendix D's schedule needs more steps ({total_steps}) than warm-up steps ({warmup_steps}); "
            "the book warms up for 20% of them"
        )


class BookAppendixDSchedule(torch.optim.lr_scheduler.LRScheduler):
    """`book_appendix_d_lr` as a torch scheduler: the optimizer's learning rate is the peak, and each
    `step()` moves to the next optimizer step, as the Trainer calls it. The rate is set, not
    multiplied by a factor, so every value equals the book's exactly."""

    def __init__(
        self,
        optimizer,
        *,
        warmup_steps: int,
        total_steps: int,
        initial_lr: float = BOOK_INITIAL_LR,
        min_lr: float = BOOK_MIN_LR,
        last_epoch: int = -1,
    ):
        check_schedule(warmup_steps, total_steps)
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.initial_lr, self.min_lr = initial_lr, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [
            book_appendix_d_lr(
                self.last_epoch,
                peak_lr=peak,
                initial_lr=self.initial_lr,
                min_lr=self.min_lr,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
            )
            for peak in self.base_lrs
        ]


def book_appendix_d_scheduler(
    optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    initial_lr: float = BOOK_INITIAL_LR,
    min_lr: float = BOOK_MIN_LR,
) -> BookAppendixDSchedule:
    """Appendix D's schedule for `optimizer` (whose learning rate is the peak), ready for
    `Trainer(optimizers=(optimizer, scheduler))`. The book warms up for 20% of the steps."""
    return BookAppendixDSchedule(
        optimizer, warmup_steps=warmup_steps, total_steps=total_steps, initial_lr=initial_lr, min_lr=min_lr
    )


class ClipAfterWarmupCallback(TrainerCallback):
    """Appendix D's clipping for the Trainer: no clipping during warm-up, then `max_grad_norm` (the
    book's 1.0). The Trainer clips with `args.max_grad_norm` before each optimizer step, so this sets it
    at the start of each step and puts the user's value back at the end of training."""

    def __init__(self, warmup_steps: int, max_grad_norm: float = BOOK_MAX_GRAD_NORM, orig_book_version=False):
        self.warmup_steps = warmup_steps
        self.max_grad_norm = max_grad_norm
        self.orig_book_version = orig_book_version
        self._saved = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._saved = args.max_grad_norm

    def on_step_begin(self, args, state, control, **kwargs):
        clip = book_clips_gradients(state.global_step, self.warmup_steps, self.orig_book_version)
        args.max_grad_norm = self.max_grad_norm if clip else 0.0

    def on_train_end(self, args, state, control, **kwargs):
        if self._saved is not None:
            args.max_grad_norm = self._saved


__all__ = [
    "BOOK_INITIAL_LR",
    "BOOK_MIN_LR",
    "BOOK_MAX_GRAD_NORM",
    "book_appendix_d_lr",
    "book_clips_gradients",
    "check_schedule",
    "BookAppendixDSchedule",
    "book_appendix_d_scheduler",
    "ClipAfterWarmupCallback",
]
