"""The one helper every probe shares: loss and gradient at given weights, leaving no trace.

Probes evaluate perturbed weights with `torch.func.functional_call` on a parameter dict, never by
editing or deep-copying the model. Within `untouched(model)`, the model's parameters, their `.grad`,
its buffers (BN running statistics, num_batches_tracked), its train/eval mode and the global RNG
states (CPU and CUDA) are exactly as before when the block ends.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

BN_MODES = ("train", "eval")  # train: batch statistics (the paper's choice); eval: running statistics


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class Evaluator:
    """Loss and gradient of `model` at any weights, on one batch, with one fixed draw of randomness.

    Every evaluation starts from the RNG state the evaluator was made with, so noise layers draw the
    same noise for every weight vector (and the same noise the training step on this batch will draw).
    Buffers are passed as copies, so BN running statistics are never updated.
    """

    def __init__(self, model: nn.Module, loss_fn, batch, bn_mode: str = "train"):
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown bn_mode '{bn_mode}'; known: {', '.join(BN_MODES)}")
        self.model, self.loss_fn, self.batch, self.bn_mode = model, loss_fn, batch, bn_mode
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.buffers = {name: b for name, b in model.named_buffers()}
        self.rng = _rng_state()

    def loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = self.batch
        _set_rng_state(self.rng)
        buffers = {name: b.clone() for name, b in self.buffers.items()}  # running stats may be written: copies
        outputs = functional_call(self.model, (params, buffers), (inputs,))
        return self.loss_fn(outputs, targets)

    def loss_and_grad(self, params: dict[str, torch.Tensor], wrt: list[str] | None = None):
        """(loss, {name: gradient}) at `params`; gradients only for the names in `wrt` (default: all)."""
        wrt = list(params) if wrt is None else wrt
        leaves = {name: p.detach().requires_grad_(name in wrt) for name, p in params.items()}
        with torch.enable_grad():
            loss = self.loss(leaves)
            grads = torch.autograd.grad(loss, [leaves[name] for name in wrt], allow_unused=True)
        grads = {name: torch.zeros_like(leaves[name]) if g is None else g for name, g in zip(wrt, grads)}
        return loss.detach(), grads


@contextmanager
def untouched(model: nn.Module, bn_mode: str = "train"):
    """Run a probe in the given BN mode; restore mode, buffers and RNG states afterwards, whatever happens."""
    was_training = model.training
    rng = _rng_state()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.train(bn_mode == "train")
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        _set_rng_state(rng)


# ----------------------------------------------------------------------------------------------
# Arithmetic on parameter dicts (name -> tensor)
# ----------------------------------------------------------------------------------------------
def flat_norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The l2 norm of all tensors taken as one vector."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors.values()]))


def moved(params: dict, direction: dict, eta: float) -> dict:
    """params - eta * direction (the SGD step for direction = gradient)."""
    return {name: p - eta * direction[name] for name, p in params.items()}


def difference_norm(a: dict, b: dict) -> torch.Tensor:
    return flat_norm({name: a[name] - b[name] for name in a})
