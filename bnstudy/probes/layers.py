"""The weight layers of any model, found by what they are, in the order a forward pass uses them.

A weight layer is a module that owns a weight of two or more dimensions: a convolution, a linear layer, an
embedding, transformers' Conv1D (whose weight is stored transposed). Forward pre-hooks number them by their first
call, from 1: the order data flows through them, whatever order the modules were registered in. A weight that two
modules share (GPT-2's tied `lm_head` and `wte`) is one layer, numbered at its first use.

What comes before layer #i, for a model that is not a chain: the trainable parameters that layer's input depends on
at its first call, read off the autograd graph that reaches the input. So in a ResNet block the shortcut convolution
is not upstream of the main path's convolutions (they read the same input), in a transformer's attention `k_proj`
has everything up to its `layernorm_before` upstream and not its sibling `q_proj`, and for a chain (VGG, the deep
linear network) it is every parameter registered before the layer's weight.

    layers = traced_layers(model, F.cross_entropy, (x, y))     # [WeightLayer(number, module, weight, upstream, ...)]
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from bnstudy.probes.functional import Evaluator, untouched


@dataclass(frozen=True)
class WeightLayer:
    number: int  # from 1, in the order of first calls
    module: str  # the module's qualified name ("" for the model itself)
    weight: str  # the weight's parameter name (a shared weight: its first name, as model.named_parameters gives it)
    upstream: tuple[str, ...]  # the trainable parameters the layer's input depends on, in registration order
    trainable: bool  # False: a frozen weight (requires_grad=False), which has no gradient to measure


def weight_modules(model: nn.Module) -> dict[nn.Module, tuple[str, str]]:
    """module -> (module name, weight name) for every module owning a weight of two or more dimensions."""
    first = {id(p): name for name, p in model.named_parameters()}  # the name a shared weight goes by
    found = {}
    for module_name, module in model.named_modules():
        weight = module._parameters.get("weight")  # the module's own weight, not a child's
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and id(weight) in first:
            found[module] = (module_name, first[id(weight)])
    return found


def parameters_reaching(tensors: list, names: dict[int, str]) -> set[str]:
    """The names (by id in `names`) of the autograd leaves from which any of `tensors` is computed."""
    found, seen, stack = set(), set(), []
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            if t.grad_fn is None:
                found.add(names.get(id(t)))  # a leaf handed straight in
            else:
                stack.append(t.grad_fn)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the node of a leaf
        if variable is not None:
            found.add(names.get(id(variable)))
        stack += [child for child, _ in node.next_functions if child is not None]
    found.discard(None)
    return found


class LayerTrace:
    """Hooks on a model's weight modules that record, during one forward pass, the layers in the order of their first
    calls with what each one's input depends on. `layers` holds the result."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: list[WeightLayer] = []

    @contextmanager
    def watching(self, leaves: dict[str, torch.Tensor]):
        """Hook the forward pass in which the tensors `leaves` (name -> tensor) stand for the trainable parameters."""
        modules = weight_modules(self.model)
        names, order = {id(t): name for name, t in leaves.items()}, list(leaves)
        self.layers = []

        def first_call(module, args, kwargs):
            module_name, weight = modules[module]
            if any(layer.weight == weight for layer in self.layers):
                return  # a later call, or a second module sharing the weight
            upstream = parameters_reaching(tree_leaves((args, kwargs)), names) - {weight}
            self.layers.append(WeightLayer(len(self.layers) + 1, module_name, weight,
                                           tuple(name for name in order if name in upstream), weight in leaves))

        handles = [module.register_forward_pre_hook(first_call, with_kwargs=True) for module in modules]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def traced_layers(model: nn.Module, loss_fn, batch, *, bn_mode: str | None = "train") -> list[WeightLayer]:
    """The weight layers of `model`, numbered by one forward pass on `batch` (see the module's docstring). Leaves the
    model as it found it."""
    with untouched(model, bn_mode):
        evaluator = Evaluator(model, loss_fn, batch, bn_mode)
        leaves = {name: p.detach().requires_grad_(True) for name, p in evaluator.params.items()}
        with torch.enable_grad(), LayerTrace(model).watching(leaves) as trace:
            evaluator.loss(leaves)  # the forward alone: the graph it builds is all the trace reads
    return trace.layers
