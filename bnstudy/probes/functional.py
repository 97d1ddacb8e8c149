"""The one helper every probe shares: loss and gradient at given weights, leaving no trace.

Probes evaluate perturbed weights with `torch.func.functional_call` on a parameter dict, never by
editing or deep-copying the model. Within `untouched(model)`, the model's parameters, their `.grad` and
`requires_grad`, its buffers (BN running statistics, num_batches_tracked), every module's train/eval mode
and the global RNG states (CPU and CUDA) are exactly as before when the block ends.

What a probe measures, on any model (docs/probes.md):
- the trainable parameters alone (`requires_grad=True`): a frozen weight is a constant of the loss, left out of
  the gradient, the Hessian and the step w - eta g, as curvlinops and hessian-eigenthings leave it out;
- `bn_mode` switches the normalization layers alone (`switched_by_bn_mode`); dropout and every other module keep
  the mode the user set, and draw one fixed mask for every evaluation of a probe (the RNG is reset before each).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _NormBase

BN_MODES = ("train", "eval")  # train: batch statistics (the paper's choice); eval: running statistics


def switched_by_bn_mode(module: nn.Module) -> bool:
    """Whether `bn_mode` sets this module's mode: torch's batch and instance norms (whose output depends on it through
    batch or running statistics), and any module whose class says `switched_by_bn_mode = True` (bnstudy's l_p norms
    and the noise of noisy BN). Layer and group norms have no mode; dropout is not a normalization."""
    return isinstance(module, _NormBase) or getattr(type(module), "switched_by_bn_mode", False)


def check_bn_mode(bn_mode: str | None) -> None:
    if bn_mode is not None and bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode '{bn_mode}'; known: {', '.join(BN_MODES)}, or None (as the model is)")


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> detached parameter, for the parameters a probe moves: those with requires_grad (one name per tensor:
    tied weights appear once, under their first name, and functional_call moves every alias with it)."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameter (requires_grad=True): nothing to probe")
    return params


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

    def __init__(self, model: nn.Module, loss_fn, batch, bn_mode: str | None = "train"):
        check_bn_mode(bn_mode)
        self.model, self.loss_fn, self.batch, self.bn_mode = model, loss_fn, batch, bn_mode
        self.params = trainable(model)  # frozen parameters stay in the model, constants of every evaluation
        self.buffers = {name: b for name, b in model.named_buffers()}
        self.rng = _rng_state()

    def loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs, targets = self.batch
        _set_rng_state(self.rng)
        buffers = {name: b.clone() for name, b in self.buffers.items()}  # running stats may be written: copies
        outputs = functional_call(self.model, (params, buffers), (inputs,))
        return self.loss_fn(outputs, targets)

    def loss_and_grad(self, params: dict[str, torch.Tensor], wrt: list[str] | None = None,
                      watching: Callable[[dict[str, torch.Tensor]], ContextManager] | None = None):
        """(loss, {name: gradient}) at `params`; gradients only for the names in `wrt` (default: all).
        `watching(leaves)`: a context around the forward pass, given the tensors that stand for the parameters in it
        (bnstudy.probes.layers.LayerTrace.watching finds the weight layers that way, in the same pass)."""
        wrt = list(params) if wrt is None else wrt
        leaves = {name: p.detach().requires_grad_(name in wrt) for name, p in params.items()}
        with torch.enable_grad(), (watching(leaves) if watching else nullcontext()):
            loss = self.loss(leaves)
            grads = torch.autograd.grad(loss, [leaves[name] for name in wrt], allow_unused=True)
        grads = {name: torch.zeros_like(leaves[name]) if g is None else g for name, g in zip(wrt, grads)}
        return loss.detach(), grads


@contextmanager
def untouched(model: nn.Module, bn_mode: str | None = "train"):
    """Run a probe with the normalization layers in `bn_mode` (None: as they are); restore every module's mode, the
    buffers and the RNG states afterwards, whatever happens."""
    check_bn_mode(bn_mode)
    modes = [(module, module.training) for module in model.modules()]
    rng = _rng_state()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if bn_mode is not None:
        for module in model.modules():
            if switched_by_bn_mode(module):
                module.training = bn_mode == "train"  # this module alone: train() would recurse into children
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
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
