"""Our probes on three transformers models, built from configs (bnstudy.crosscheck): each leaves the model exactly as
it found it, and top_eigenvalues leaves frozen parameters out as curvlinops does.

`make crosscheck` runs this file in .venv-peers; where transformers is not installed (the main environment, CI) every
test here skips. The models run with transformers' default attention (SDPA): our probes take their Hessian products
under the math kernel themselves. curvlinops gets the eager-attention copy (crosscheck.peer_copy), as it needs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("transformers")

from bnstudy import crosscheck  # noqa: E402  (the models and batches; imports no peer at import time)
from bnstudy.probes.curvature import hessian_trace, top_eigenvalues  # noqa: E402
from bnstudy.probes.ics import gradient_shift  # noqa: E402
from bnstudy.probes.landscape import along_gradient  # noqa: E402
from bnstudy.probes.spectrum import gradient_share, spectral_density  # noqa: E402

# Frozen in the state tests: vectors and embeddings that are no weight layer, so that gradient_shift's layers 1 and 3
# are trainable whatever order the layers are numbered in.
FROZEN = {"resnet": ("model.resnet.embedder.embedder.normalization.",),
          "vit": ("model.vit.embeddings.cls_token", "model.vit.embeddings.position_embeddings"),
          "gpt2": ("model.transformer.ln_f.",)}
# Frozen in the eigenvalue test: the embeddings (GPT-2's wte is lm_head's weight too: tied, one parameter)
EMBEDDINGS = {"resnet": ("model.resnet.embedder.",), "vit": ("model.vit.embeddings.",),
              "gpt2": ("model.transformer.wte.", "model.transformer.wpe.")}

PROBES = {
    "along_gradient": lambda m, b, mode: along_gradient(m, F.cross_entropy, b, [0.01, 0.1], bn_mode=mode),
    "gradient_shift": lambda m, b, mode: gradient_shift(m, F.cross_entropy, b, 0.1, [1, 3], bn_mode=mode),
    "top_eigenvalues": lambda m, b, mode: top_eigenvalues(m, F.cross_entropy, b, k=2, bn_mode=mode, tol=1e-2,
                                                          max_hvps=12),
    "hessian_trace": lambda m, b, mode: hessian_trace(m, F.cross_entropy, b, samples=4, bn_mode=mode),
    "spectral_density": lambda m, b, mode: spectral_density(m, F.cross_entropy, b, n_v=1, m=4, bn_mode=mode),
    "gradient_share": lambda m, b, mode: gradient_share(m, F.cross_entropy, b, k=2, bn_mode=mode, max_steps=8),
}

# (model, bn_mode, the model's top-level mode): one submodule always in the other mode than the top
SETUPS = [("resnet", "train", "eval"), ("resnet", "eval", "train"), ("vit", "train", "eval"), ("gpt2", "train", "eval")]


def freeze(model: nn.Module, prefixes) -> list[str]:
    names = [name for name, p in model.named_parameters() if name.startswith(prefixes)]
    assert names, f"nothing to freeze under {prefixes}"
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
    return names


def prepared(name: str, top: str) -> tuple[nn.Module, tuple]:
    """The model with mixed modes, some parameters frozen, some gradients set (one on a frozen parameter) and some
    None."""
    model = crosscheck.build(name).train(top == "train")
    other = top != "train"
    if name == "resnet":  # one BN layer against the top's mode, and a BN-free submodule too
        model.model.resnet.embedder.embedder.normalization.train(other)
        model.model.classifier.train(other)
    else:  # one dropout against the top's mode, and a module with no mode of its own
        next(m for m in model.modules() if isinstance(m, nn.Dropout)).train(other)
        next(m for m in model.modules() if isinstance(m, nn.LayerNorm)).train(other)
    frozen = freeze(model, FROZEN[name])
    generator = torch.Generator().manual_seed(5)
    for i, (param_name, p) in enumerate(model.named_parameters()):
        if i % 2 == 0 or param_name == frozen[0]:
            p.grad = torch.randn(p.shape, generator=generator)
    return model, crosscheck.make_batch(name)


def snapshot(model: nn.Module) -> dict:
    return {"modes": {name: m.training for name, m in model.named_modules()},
            "params": {name: p.detach().clone() for name, p in model.named_parameters()},
            "buffers": {name: b.clone() for name, b in model.named_buffers()},
            "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
            "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
            "rng": torch.get_rng_state()}


@pytest.mark.parametrize("probe", list(PROBES))
@pytest.mark.parametrize("name,bn_mode,top", SETUPS, ids=[f"{n}-bn_{b}-model_{t}" for n, b, t in SETUPS])
def test_probe_leaves_the_model_as_found(name, bn_mode, top, probe):
    model, batch = prepared(name, top)
    torch.manual_seed(123)
    before = snapshot(model)
    PROBES[probe](model, batch, bn_mode)
    after = snapshot(model)

    changed = [n for n in before["modes"] if before["modes"][n] != after["modes"][n]]
    assert not changed, f"modes changed: {changed[:5]}{' ...' if len(changed) > 5 else ''}"
    assert after["requires_grad"] == before["requires_grad"]
    for kind in ("params", "buffers"):
        assert after[kind].keys() == before[kind].keys()
        moved = [n for n in before[kind] if not torch.equal(before[kind][n], after[kind][n])]
        assert not moved, f"{kind} changed: {moved[:5]}"
    for n, grad in before["grads"].items():
        if grad is None:
            assert after["grads"][n] is None, f"{n}.grad was None, now set"
        else:
            assert after["grads"][n] is not None and torch.equal(grad, after["grads"][n]), f"{n}.grad changed"
    assert torch.equal(after["rng"], before["rng"]), "the global RNG state changed"


def eigsh_top(model: nn.Module, params, batch, k: int) -> list[float]:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    operator = HessianLinearOperator(model, nn.CrossEntropyLoss(), list(params), [batch], check_deterministic=False)
    v0 = np.random.default_rng(0).standard_normal(operator.shape[1])
    # tol 1e-6, not tighter: float32 products are noisy at ~1e-7, and ARPACK short of its tol runs to maxiter
    values = eigsh(operator.to_scipy(), k=k, which="LA", tol=1e-6, maxiter=2000, v0=v0, return_eigenvectors=False)
    return sorted(values.tolist(), reverse=True)


@pytest.mark.parametrize("name", crosscheck.MODELS)
def test_top_eigenvalues_leave_frozen_parameters_out(name):
    """With the embeddings frozen, ours equals eigsh on curvlinops' operator over the trainable parameters alone (and
    differs from it over all parameters: the freeze matters on this model)."""
    pytest.importorskip("curvlinops")
    model = crosscheck.build(name)  # eval: dropout off; ResNet's BN in eval, where curvlinops works
    peers = crosscheck.peer_copy(model, name)  # eager attention for curvlinops' forward-over-reverse products
    batch = crosscheck.make_batch(name)
    everything = eigsh_top(peers, peers.parameters(), batch, k=2)
    freeze(model, EMBEDDINGS[name])
    freeze(peers, EMBEDDINGS[name])

    ours = top_eigenvalues(model, F.cross_entropy, batch, k=2, bn_mode="eval", tol=1e-6, max_hvps=300)
    theirs = eigsh_top(peers, [p for p in peers.parameters() if p.requires_grad], batch, k=2)

    assert ours["converged"]
    np.testing.assert_allclose(ours["eigenvalues"], theirs, rtol=1e-4)
    assert abs(everything[0] - theirs[0]) > 1e-2 * abs(theirs[0]), "freezing the embeddings did not move lambda_max"
