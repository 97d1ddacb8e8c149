"""Peer cross-check: our Hessian probes against curvlinops, hessian-eigenthings and PyHessian (`make crosscheck`).

    .venv-peers/bin/python -m bnstudy.crosscheck --results-dir results   # -> results/crosscheck/crosscheck.{csv,md}

On three tiny transformers models built from configs (random init, no download, fixed seeds and batches):
ResNetForImageClassification (BatchNorm), ViTForImageClassification (LayerNorm, dropout 0.1 in the config, compared in
eval() so dropout is off) and GPT2LMHeadModel (tied lm_head/wte; LM cross-entropy on the shifted logits). Each row is
ours against one peer, each in the peer's own mode (the `mode` column):

- Hv: one product on one fixed vector (the operators themselves, before any algorithm);
- eig1..eig3: `top_eigenvalues` against eigsh (ARPACK) on curvlinops' HessianLinearOperator, and against
  hessian-eigenthings' Lanczos (a fixed number of steps: it does not stop on convergence);
- trace: `hessian_trace` (Hutchinson) against curvlinops' Hutchinson handed ours' own Rademacher vectors
  (deterministic: the same estimator on the same vectors), then against its Hutchinson and Hutch++ on their own draws,
  at the same number of products;
- SLQ tr H, SLQ tr H^2: `spectral_density`'s moments n * mean_v sum_i tau_i theta_i^p (exact quadratures of v^T H v and
  ||H v||^2 for p = 1, 2) against PyHessian's density, handed ours' start vectors, then on its own draws.

References, independent of ours and of the peers: a plain double backward on a float64 copy of the model (eager
attention), with eigsh at tol 1e-10 for the eigenvalues; for the same-vector rows, float64 v^T H v and ||H v||^2 on
those vectors (exact); for the own-draw rows, a large-sample Hutchinson (REF_SAMPLES vectors): an exact trace would
take n = 80k products per model. Own-draw estimates differ from each other and from the reference by their sampling
error: their notes give the standard errors and |x - ref| / se.

Found with torch 2.13.0: curvlinops' products are forward-over-reverse (jvp of jacrev), and torch's forward-mode
derivative of layer_norm's backward is wrong in the LayerNorm weight's rows (on Linear-LayerNorm-Linear in float64,
forward-over-reverse is 7% off float64 finite differences, 32% in the LayerNorm weight's block, where a double backward
matches them to 4e-11: tests/test_any_model.py keeps ours on the double backward), so on ViT and GPT-2 its H v is
off by ~2e-3 and its eigenvalues and traces by up to ~1e-4..1e-3. An Hv row whose side is off by more than 1e-5 names
that side's worst parameter block.

Modes. Ours: `bn_mode` switches the normalization layers alone, every other module keeps the mode set on the model
(eval here). curvlinops: its forward-over-reverse products crash on BN in train mode (the running-statistics update
inside a functorch transform), so ResNet is compared in eval there, and the crash is a row of its own.
hessian-eigenthings: runs the model in the mode it is in, a full forward at every product, so in train mode it updates
BN's running statistics at every product: it gets a deep copy (the note says by how much the copy's statistics moved).
PyHessian: forces model.eval() and leaves a graph in .grad: a deep copy too. Its `density` calls torch.eig, which
torch 2 removed: `_torch_eig` below stands in for it during that call alone (PyHessian only calls it on its symmetric
tridiagonal T, where torch.linalg.eigh is exact). transformers' default attention (SDPA) has no double backward nor
forward-mode AD in its fused CPU kernel: ours runs on the default-attention model (our probes take their products
under the math kernel), the peers and the reference on a copy built with attn_implementation="eager", same weights.

The peers are imported inside functions only, and nothing else in the package imports this module: the main
environment has none of them (.venv-peers has, see the Makefile's `crosscheck`).
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib
import io
import math
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
MODELS = ("resnet", "vit", "gpt2")
K = 3  # top eigenvalues compared
TOL = 1e-4  # ours' Lanczos, eigsh on curvlinops and hessian-eigenthings: the same relative tolerance
MAX_HVPS = 300
HE_STEPS = 40  # hessian-eigenthings' Lanczos runs a fixed number of steps (max_iter) and reports convergence after
TRACE_SAMPLES = 60  # products per trace estimate, each side (a multiple of 3 for Hutch++)
SLQ = {"n_v": 10, "m": 20}  # start vectors x Lanczos steps, both sides
REF_TOL = 1e-10  # eigsh on the float64 reference
REF_SAMPLES = 400  # Hutchinson samples of the trace reference
REPEATS = 3  # timings: the median of this many runs of each side


# ----------------------------------------------------------------------------------------------
# The models and batches
# ----------------------------------------------------------------------------------------------
class Logits(nn.Module):
    """A transformers model as our probes and the peers take it: model(inputs) -> logits. For a language model
    (`shift`), the logits of positions 0..T-2 flattened to (B (T-1), V), so that F.cross_entropy against
    ids[:, 1:].reshape(-1) is the LM loss."""

    def __init__(self, model: nn.Module, shift: bool = False):
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs).logits
        return logits[:, :-1].reshape(-1, logits.shape[-1]) if self.shift else logits


def model_config(name: str, attn: str = "sdpa"):
    """The configs: ~80k parameters (ResNet, ViT), ~110k (GPT-2, vocabulary 500)."""
    from transformers import GPT2Config, ResNetConfig, ViTConfig

    if name == "resnet":
        return ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                            layer_type="basic", num_labels=10)
    if name == "vit":
        return ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=256, num_labels=10, hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.1, attn_implementation=attn)
    if name == "gpt2":
        return GPT2Config(vocab_size=500, n_positions=32, n_embd=48, n_layer=3, n_head=4, bos_token_id=0,
                          eos_token_id=0, attn_implementation=attn)
    raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")


def build(name: str, attn: str = "sdpa", seed: int = SEED) -> Logits:
    """The model `name` with random weights from `seed`, in eval(); ResNet's BN running statistics warmed by three
    forward passes in train mode on random images (so that eval mode is not the identity of a fresh BN)."""
    from transformers import GPT2LMHeadModel, ResNetForImageClassification, ViTForImageClassification

    classes = {"resnet": ResNetForImageClassification, "vit": ViTForImageClassification, "gpt2": GPT2LMHeadModel}
    config = model_config(name, attn)
    torch.manual_seed(seed)
    model = Logits(classes[name](config), shift=name == "gpt2")
    if name == "resnet":
        generator = torch.Generator().manual_seed(seed + 1)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(2 * torch.randn(16, 3, 32, 32, generator=generator) + 0.5)
    return model.eval()


def make_batch(name: str, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): 8 images 3x32x32 with 10 classes, or 4 sequences of 32 token ids (targets: the ids shifted
    by one, flattened)."""
    generator = torch.Generator().manual_seed(seed + 2)
    if name == "gpt2":
        ids = torch.randint(0, model_config(name).vocab_size, (4, 32), generator=generator)
        return ids, ids[:, 1:].reshape(-1)
    return torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator)


def peer_copy(model: Logits, name: str) -> Logits:
    """The same weights, buffers and modes with eager attention (the peers' products need a double backward or
    forward-mode AD, which SDPA's fused CPU kernel lacks)."""
    if name == "resnet":
        return copy.deepcopy(model)
    twin = build(name, attn="eager")
    twin.load_state_dict(model.state_dict())
    for (_, a), (_, b) in zip(model.named_modules(), twin.named_modules()):
        b.training = a.training
    return twin


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def set_bn_mode(model: nn.Module, mode: str) -> nn.Module:
    """BN layers alone to `mode`, as our bn_mode does (a peer's copy, where the peer takes the model's own modes)."""
    from torch.nn.modules.batchnorm import _NormBase

    for module in model.modules():
        if isinstance(module, _NormBase):
            module.training = mode == "train"
    return model


def bn_count(model: nn.Module) -> int:
    """num_batches_tracked of the first BN layer (0 where there is none)."""
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            return int(buffer)
    return 0


# ----------------------------------------------------------------------------------------------
# Counting and timing
# ----------------------------------------------------------------------------------------------
class Counter:
    def __init__(self):
        self.n = 0

    def reset(self) -> None:
        self.n = 0


@contextmanager
def counting(owner, attribute: str, per_call=lambda args: 1):
    """Count a peer's Hessian products: `owner.attribute` replaced (mock.patch.object) by a wrapper that adds
    per_call(args) and calls the original."""
    original = getattr(owner, attribute)
    counter = Counter()

    def wrapper(*args, **kwargs):
        counter.n += per_call(args)
        return original(*args, **kwargs)

    with mock.patch.object(owner, attribute, wrapper):
        yield counter


def timed(run, repeats: int = REPEATS, prepare=None):
    """(the last run's result, the median wall time of `repeats` runs). prepare() (untimed, before each run) makes
    the run's input (a fresh deep copy) or resets a counter; run() takes what it returns where it is given."""
    times, result = [], None
    for _ in range(repeats):
        state = prepare() if prepare is not None else None
        start = time.perf_counter()
        result = run(state) if prepare is not None else run()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# The reference: a plain double backward on a float64 copy
# ----------------------------------------------------------------------------------------------
class Reference:
    """v -> H v in float64 by a plain double backward on a float64 copy of the (eager-attention) model, BN in `mode`,
    over the trainable parameters; exact eigenvalues (eigsh at REF_TOL) and a large-sample Hutchinson."""

    def __init__(self, peers_model: nn.Module, batch, mode: str):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self.model = set_bn_mode(copy.deepcopy(peers_model), mode).double()
        inputs, targets = batch
        inputs = inputs.double() if inputs.is_floating_point() else inputs
        self.params = trainable(self.model)
        self.size = sum(p.numel() for p in self.params)
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            loss = F.cross_entropy(self.model(inputs), targets)
            self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.calls = 0
        self._eigen = self._trace = None

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        chunks = v.double().split([p.numel() for p in self.params])
        products = torch.autograd.grad(self.grads, self.params, [c.view_as(p) for c, p in zip(chunks, self.params)],
                                       retain_graph=True)
        return torch.cat([p.reshape(-1) for p in products])

    def eigen(self) -> dict:
        if self._eigen is None:
            import numpy as np
            from scipy.sparse.linalg import LinearOperator, eigsh

            calls, start = self.calls, time.perf_counter()
            operator = LinearOperator((self.size, self.size), dtype=np.float64,
                                      matvec=lambda x: self.matvec(torch.from_numpy(np.asarray(x).ravel())).numpy())
            v0 = np.random.default_rng(SEED).standard_normal(self.size)
            values = eigsh(operator, k=K, which="LA", tol=REF_TOL, v0=v0, return_eigenvectors=False)
            self._eigen = {"eigenvalues": sorted(values.tolist(), reverse=True), "hvps": self.calls - calls,
                           "time": time.perf_counter() - start}
        return self._eigen

    def quadratics(self, vectors) -> tuple[list[float], list[float]]:
        """v^T H v and ||H v||^2 for each vector (float64): exact, where the vectors are ours."""
        first, second = [], []
        for v in vectors:
            hv = self.matvec(v)
            first.append(float(v.double() @ hv))
            second.append(float(hv @ hv))
        return first, second

    def traces(self) -> dict:
        """tr H and tr H^2 by Hutchinson over REF_SAMPLES Rademacher vectors of its own: the means of v^T H v and
        ||H v||^2, their standard errors, and the standard deviation of one sample of v^T H v."""
        if self._trace is None:
            calls, start = self.calls, time.perf_counter()
            first, second = self.quadratics(rademacher_stream(SEED + 7, self.size, REF_SAMPLES))
            se = lambda xs: statistics.stdev(xs) / math.sqrt(len(xs))  # noqa: E731
            self._trace = {"trace": statistics.fmean(first), "trace_se": se(first), "sd": statistics.stdev(first),
                           "trace2": statistics.fmean(second), "trace2_se": se(second),
                           "hvps": self.calls - calls, "time": time.perf_counter() - start}
        return self._trace


def rademacher_stream(seed: int, size: int, count: int) -> list[torch.Tensor]:
    """`count` Rademacher vectors drawn one after the other from torch.Generator().manual_seed(seed): the vectors
    our hessian_trace and spectral_density draw for that seed (a CPU generator's stream does not depend on how the
    draws are chunked). Checked against their results before any row relies on it."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 2, (size,), generator=generator) * 2 - 1).float() for _ in range(count)]


def z_score(a: float, se_a: float, b: float, se_b: float) -> float:
    """|a - b| in units of their combined standard error."""
    return abs(a - b) / math.sqrt(se_a ** 2 + se_b ** 2) if se_a > 0 or se_b > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    params: int
    quantity: str
    mode: str
    peer: str
    ours: float
    peer_value: float
    reference: float
    time_ours: float
    time_peer: float
    hvps_ours: int
    hvps_peer: int
    note: str = ""
    rel_diff: float = field(init=False)
    ours_vs_ref: float = field(init=False)
    peer_vs_ref: float = field(init=False)

    def __post_init__(self):
        self.rel_diff = rel(self.ours, self.peer_value)
        self.ours_vs_ref = rel(self.ours, self.reference)
        self.peer_vs_ref = rel(self.peer_value, self.reference)


class Comparison:
    """Every comparison for one model; `rows` collects them."""

    def __init__(self, name: str, progress):
        from bnstudy.probes.curvature import HessianOperator  # noqa: F401  (fail early where the probes are broken)

        self.name, self.progress = name, progress
        self.model = build(name)  # default attention (SDPA for ViT and GPT-2): ours
        self.peers_model = peer_copy(self.model, name)  # eager attention: the peers and the reference
        self.batch = make_batch(name)
        self.sizes = [p.numel() for p in trainable(self.model)]
        self.size = sum(self.sizes)
        self.rows: list[Row] = []
        self.references: dict[str, Reference] = {}
        generator = torch.Generator().manual_seed(SEED + 3)
        self.vector = torch.randn(self.size, generator=generator)

    def reference(self, mode: str) -> Reference:
        if mode not in self.references:
            self.references[mode] = Reference(self.peers_model, self.batch, mode)
        return self.references[mode]

    def row(self, **kwargs) -> None:
        self.rows.append(Row(model=self.name, params=self.size, **kwargs))

    def step(self, what: str) -> None:
        self.progress.set_postfix_str(f"{self.name}: {what}")
        self.progress.update(1)

    # ours ------------------------------------------------------------------------------------
    def our_hv(self, mode: str) -> tuple[torch.Tensor, float]:
        from bnstudy.probes.curvature import HessianOperator
        from bnstudy.probes.functional import untouched

        def run():
            with untouched(self.model, mode):
                return HessianOperator(self.model, F.cross_entropy, self.batch, mode).matvec(self.vector)

        return timed(run)

    def our_top(self, mode: str):
        from bnstudy.probes.curvature import top_eigenvalues

        return timed(lambda: top_eigenvalues(self.model, F.cross_entropy, self.batch, k=K, bn_mode=mode, tol=TOL,
                                             max_hvps=MAX_HVPS, seed=SEED))

    # the peers ---------------------------------------------------------------------------------
    def hv_rows(self, peer: str, mode: str, mode_text: str, product) -> None:
        """ours' H v against the peer's (product(copy) -> H v, counted), and both against the float64 reference."""
        ours, t_ours = self.our_hv(mode)
        theirs, t_theirs = product()
        exact = self.reference(mode).matvec(self.vector).float()
        err = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
        note = "values: ||Hv||; differences: ||Hv_a - Hv_b|| / ||Hv_b||"
        for side, product in (("ours", ours), ("peer", theirs)):
            if err(product, exact) > 1e-5:  # where a side is off: the parameter block with the largest error
                names = [n for n, p in self.peers_model.named_parameters() if p.requires_grad]
                total = float((product - exact).norm() ** 2)
                blocks = zip(names, product.split(self.sizes), exact.split(self.sizes))
                share, block = max((float((a - b).norm() ** 2) / total, n) for n, a, b in blocks)
                note += f"; {side}'s largest error: {block} ({share:.0%} of its squared error)"
        row = Row(model=self.name, params=self.size, quantity="Hv (one vector)", mode=mode_text, peer=peer,
                  ours=float(ours.norm()), peer_value=float(theirs.norm()), reference=float(exact.norm()),
                  time_ours=t_ours, time_peer=t_theirs, hvps_ours=1, hvps_peer=1, note=note)
        row.rel_diff, row.ours_vs_ref, row.peer_vs_ref = err(ours, theirs), err(ours, exact), err(theirs, exact)
        self.rows.append(row)

    def eigen_rows(self, peer: str, mode: str, mode_text: str, ours, t_ours, theirs: list[float], t_theirs,
                   hvps_theirs, note: str) -> None:
        exact = self.reference(mode).eigen()
        for i in range(K):
            self.row(quantity=f"eig{i + 1}", mode=mode_text, peer=peer, ours=ours["eigenvalues"][i],
                     peer_value=theirs[i], reference=exact["eigenvalues"][i], time_ours=t_ours, time_peer=t_theirs,
                     hvps_ours=ours["hvps"], hvps_peer=hvps_theirs,
                     note=(f"ours converged={ours['converged']}; {note}; ref: eigsh float64 tol {REF_TOL:g}, "
                           f"{exact['hvps']} products" if i == 0 else ""))

    def curvlinops(self) -> None:
        """Hv, eigsh on HessianLinearOperator, Hutchinson and Hutch++; BN in eval (and train mode: the crash)."""
        import numpy as np
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh

        mode = "eval"
        mode_text = "eval (BN eval: curvlinops crashes on BN in train mode)" if self.name == "resnet" else "eval"
        columns = lambda args: args[3][0].shape[-1]  # noqa: E731  (_matmat_batch(self, X, y, M): M's columns)

        def operator(model):
            return HessianLinearOperator(model, nn.CrossEntropyLoss(), trainable(model), [self.batch],
                                         check_deterministic=False)

        if self.name == "resnet":  # train mode: record the crash
            try:
                operator(set_bn_mode(copy.deepcopy(self.peers_model), "train")) @ self.vector
                crash = "no crash"
            except Exception as error:  # noqa: BLE001
                crash = f"{type(error).__name__}: {str(error).splitlines()[0][:150]}"
            self.row(quantity="Hv (one vector)", mode="train (BN train)", peer="curvlinops", ours=float("nan"),
                     peer_value=float("nan"), reference=float("nan"), time_ours=float("nan"),
                     time_peer=float("nan"), hvps_ours=0, hvps_peer=0, note=f"curvlinops in train mode: {crash}")

        def hv():
            return timed(lambda: operator(self.peers_model) @ self.vector)

        self.hv_rows("curvlinops", mode, mode_text, hv)
        self.step("curvlinops Hv")

        ours, t_ours = self.our_top(mode)
        v0 = np.random.default_rng(SEED + 4).standard_normal(self.size)

        def top():
            values = eigsh(operator(self.peers_model).to_scipy(), k=K, which="LA", tol=TOL, v0=v0,
                           return_eigenvectors=False)
            return sorted(values.tolist(), reverse=True)

        with counting(HessianLinearOperator, "_matmat_batch", columns) as counter:
            theirs, t_theirs = timed(lambda _: top(), prepare=counter.reset)
        self.eigen_rows("curvlinops", mode, mode_text, ours, t_ours, theirs, t_theirs, counter.n,
                        f"peer: scipy eigsh (ARPACK) tol {TOL:g} on HessianLinearOperator")
        self.step("curvlinops eigsh")

        self.trace_rows(mode, mode_text, operator, columns)
        self.step("curvlinops trace")

    def eigenthings(self) -> None:
        """Hv and Lanczos (k=3, LA) of hessian-eigenthings, on a deep copy: BN in train mode for ResNet (the model's
        own mode is what it takes; a forward per product updates the copy's running statistics), eval otherwise."""
        import hessian_eigenthings
        from hessian_eigenthings import HessianOperator, lanczos, supervised_loss

        mode = "train" if self.name == "resnet" else "eval"
        mode_text = ("train (BN train; peer on a deep copy: it updates BN running stats at every product)"
                     if self.name == "resnet" else "eval")

        def operator(model):
            return HessianOperator(model, [self.batch], supervised_loss(F.cross_entropy))

        def fresh():
            return set_bn_mode(copy.deepcopy(self.peers_model), mode)

        def hv():
            return timed(lambda model: operator(model).matvec(self.vector), prepare=fresh)

        self.hv_rows("hessian-eigenthings", mode, mode_text, hv)
        self.step("hessian-eigenthings Hv")

        ours, t_ours = self.our_top(mode)

        def prepare():
            counter.reset()
            return fresh()

        def run(model):
            before = bn_count(model)
            result = lanczos(operator(model), k=K, max_iter=HE_STEPS, tol=TOL, which="LA", seed=SEED)
            return result, bn_count(model) - before

        with counting(hessian_eigenthings.HessianOperator, "_hvp_autograd") as counter:
            (result, moved), t_theirs = timed(run, prepare=prepare)
        stats = f"; the copy's BN num_batches_tracked moved by {moved}" if self.name == "resnet" else ""
        self.eigen_rows("hessian-eigenthings", mode, mode_text, ours, t_ours, result.eigenvalues.tolist(), t_theirs,
                        counter.n, f"peer: Lanczos, {HE_STEPS} steps, converged={result.converged.tolist()}{stats}")
        self.step("hessian-eigenthings Lanczos")

    def pyhessian(self) -> None:
        """Hv and the SLQ density of PyHessian (it forces eval; a deep copy), with torch.eig shimmed."""
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product


        module = importlib.import_module("pyhessian.hessian")  # the package's `hessian` is the class

        mode, mode_text = "eval", "eval (PyHessian forces model.eval(); a deep copy)"

        def hv():
            def run(model):
                found = PyHessian(model, F.cross_entropy, data=self.batch, cuda=False)
                chunks = self.vector.split([p.numel() for p in found.params])
                products = hessian_vector_product(found.gradsH, found.params,
                                                  [c.view_as(p) for c, p in zip(chunks, found.params)])
                return torch.cat([p.reshape(-1) for p in products]).detach()

            return timed(run, prepare=lambda: copy.deepcopy(self.peers_model))

        self.hv_rows("PyHessian", mode, mode_text, hv)
        self.step("PyHessian Hv")

        self.slq_rows(mode, mode_text, module, PyHessian)
        self.step("PyHessian density")

    def trace_rows(self, mode: str, mode_text: str, operator, columns) -> None:
        """hessian_trace against curvlinops' Hutchinson on ours' own vectors (deterministic: the same estimator on the
        same vectors, against the float64 v^T H v on them), then against Hutchinson and Hutch++ on their own draws
        (stochastic: judged by z-scores against the large-sample reference)."""
        from curvlinops import HessianLinearOperator, hutchinson_trace, hutchpp_trace

        from bnstudy.probes.curvature import hessian_trace

        hutchinson_module = importlib.import_module("curvlinops.trace.hutchinson")
        ours, t_ours = timed(lambda: hessian_trace(self.model, F.cross_entropy, self.batch, samples=TRACE_SAMPLES,
                                                   bn_mode=mode, seed=SEED))
        vectors = rademacher_stream(SEED, self.size, TRACE_SAMPLES)
        exact_first, _ = self.reference(mode).quadratics(vectors)
        reproduced = max(rel(a, b) for a, b in zip(ours["samples"], exact_first)) < 1e-3

        def with_our_vectors():
            supply = iter(vectors)
            with mock.patch.object(hutchinson_module, "random_vector", lambda dim, *args: next(supply)):
                return float(hutchinson_trace(operator(self.peers_model), TRACE_SAMPLES))

        if reproduced:
            with counting(HessianLinearOperator, "_matmat_batch", columns) as counter:
                theirs, t_theirs = timed(lambda _: with_our_vectors(), prepare=counter.reset)
            self.row(quantity="trace (Hutchinson, ours' vectors)", mode=mode_text, peer="curvlinops",
                     ours=ours["trace"], peer_value=theirs, reference=statistics.fmean(exact_first),
                     time_ours=t_ours, time_peer=t_theirs, hvps_ours=ours["hvps"], hvps_peer=counter.n,
                     note=f"the same {TRACE_SAMPLES} Rademacher vectors both sides; ref: float64 v^T H v on them")
        else:
            self.row(quantity="trace (Hutchinson, ours' vectors)", mode=mode_text, peer="curvlinops",
                     ours=ours["trace"], peer_value=float("nan"), reference=float("nan"), time_ours=t_ours,
                     time_peer=float("nan"), hvps_ours=ours["hvps"], hvps_peer=0,
                     note="ours' vectors not reproduced (its samples differ from v^T H v on the expected vectors)")

        exact = self.reference(mode).traces()
        expected_se = exact["sd"] / math.sqrt(TRACE_SAMPLES)  # a TRACE_SAMPLES-sample Hutchinson's standard error
        for label, estimator in (("Hutchinson", hutchinson_trace), ("Hutch++", hutchpp_trace)):
            def estimate():
                with torch.random.fork_rng():
                    torch.manual_seed(SEED + 5)  # the peer draws its vectors from the global RNG
                    return float(estimator(operator(self.peers_model), TRACE_SAMPLES))

            with counting(HessianLinearOperator, "_matmat_batch", columns) as counter:
                theirs, t_theirs = timed(lambda _: estimate(), prepare=counter.reset)
            z_ours = z_score(ours["trace"], ours["stderr"], exact["trace"], exact["trace_se"])
            z_peer = z_score(theirs, expected_se, exact["trace"], exact["trace_se"])
            self.row(quantity=f"trace ({label})", mode=mode_text, peer="curvlinops", ours=ours["trace"],
                     peer_value=theirs, reference=exact["trace"], time_ours=t_ours, time_peer=t_theirs,
                     hvps_ours=ours["hvps"], hvps_peer=counter.n,
                     note=(f"own draws; ours +-{ours['stderr']:.3g} (1 se), a {TRACE_SAMPLES}-sample Hutchinson "
                           f"+-{expected_se:.3g}; ref: Hutchinson float64, {REF_SAMPLES} samples, "
                           f"+-{exact['trace_se']:.3g}; |x - ref| / se: ours {z_ours:.1f}, peer {z_peer:.1f}"
                           f"{' (in a Hutchinson se: Hutch++ has a smaller one)' if label == 'Hutch++' else ''}"))

    def slq_rows(self, mode: str, mode_text: str, module, PyHessian) -> None:
        """spectral_density's moments against PyHessian's density: on ours' start vectors (deterministic: the moments
        p = 1, 2 are exact quadratures, v^T H^p v, whatever the Lanczos accuracy; against float64 on those vectors),
        then on PyHessian's own draws (stochastic: z-scores against the large-sample reference)."""
        from bnstudy.probes.spectrum import spectral_density

        ours, t_ours = timed(lambda: spectral_density(self.model, F.cross_entropy, self.batch, n_v=SLQ["n_v"],
                                                      m=SLQ["m"], bn_mode=mode, seed=SEED))
        vectors = rademacher_stream(SEED, self.size, SLQ["n_v"])
        exact_first, exact_second = self.reference(mode).quadratics(vectors)
        per_vector = [self.size * sum(t * w for t, w in zip(thetas, taus))
                      for thetas, taus in zip(ours["ritz"], ours["weights"])]
        reproduced = max(rel(a, b) for a, b in zip(per_vector, exact_first)) < 1e-3

        def density(model, supply=None):
            """PyHessian's SLQ (torch.eig shimmed); with `supply`, its start vectors are ours (torch.randint_like,
            which it draws them with per parameter, hands out the slices of ours' vectors)."""
            with ExitStack() as stack:
                stack.enter_context(torch.random.fork_rng())
                stack.enter_context(mock.patch.object(torch, "eig", _torch_eig, create=True))
                if supply is not None:
                    sizes = [p.numel() for p in trainable(model)]
                    pieces = iter([piece for v in supply for piece in v.split(sizes)])
                    stack.enter_context(mock.patch.object(
                        torch, "randint_like", lambda p, *args, **kwargs: next(pieces).view_as(p).to(p, copy=True)))
                torch.manual_seed(SEED + 6)  # PyHessian draws its start vectors from the global RNG
                found = PyHessian(model, F.cross_entropy, data=self.batch, cuda=False)
                return found.density(iter=SLQ["m"], n_v=SLQ["n_v"])

        exact = self.reference(mode).traces()
        for supply in ([vectors] if reproduced else []) + [None]:
            own = supply is None

            def prepare():
                counter.reset()
                return copy.deepcopy(self.peers_model)

            with counting(module, "hessian_vector_product") as counter:
                (ritz, weights), t_theirs = timed(lambda model: density(model, supply), prepare=prepare)
            for p, ref, ref_se, same in ((1, exact["trace"], exact["trace_se"], statistics.fmean(exact_first)),
                                         (2, exact["trace2"], exact["trace2_se"], statistics.fmean(exact_second))):
                mine = slq_moment(ours["ritz"], ours["weights"], ours["size"], p)
                theirs = slq_moment(ritz, weights, self.size, p)
                base = f"SLQ tr H{'^2' if p == 2 else ''}"
                if own:
                    note = (f"own draws; n_v={SLQ['n_v']}, m={SLQ['m']}; +-1 se over start vectors: ours "
                            f"{mine[1]:.3g}, peer {theirs[1]:.3g}; ref: Hutchinson float64, {REF_SAMPLES} samples, "
                            f"+-{ref_se:.3g}; |x - ref| / se: ours {z_score(mine[0], mine[1], ref, ref_se):.1f}, "
                            f"peer {z_score(theirs[0], theirs[1], ref, ref_se):.1f}")
                else:
                    note = (f"the same {SLQ['n_v']} start vectors both sides, m={SLQ['m']}; ref: float64 "
                            f"{'v^T H v' if p == 1 else '||H v||^2'} on them")
                self.row(quantity=base if own else f"{base} (ours' start vectors)", mode=mode_text,
                         peer="PyHessian", ours=mine[0], peer_value=theirs[0], reference=ref if own else same,
                         time_ours=t_ours, time_peer=t_theirs, hvps_ours=ours["hvps"], hvps_peer=counter.n,
                         note=note)
        if not reproduced:
            self.row(quantity="SLQ (ours' start vectors)", mode=mode_text, peer="PyHessian", ours=float("nan"),
                     peer_value=float("nan"), reference=float("nan"), time_ours=t_ours, time_peer=float("nan"),
                     hvps_ours=ours["hvps"], hvps_peer=0, note="ours' start vectors not reproduced")


def slq_moment(ritz, weights, size: int, p: int) -> tuple[float, float]:
    """(n * mean over start vectors of sum_i tau_i theta_i^p, its standard error): the SLQ estimate of tr H^p."""
    per_vector = [size * sum(float(w) * float(t) ** p for t, w in zip(thetas, taus))
                  for thetas, taus in zip(ritz, weights)]
    se = statistics.stdev(per_vector) / math.sqrt(len(per_vector)) if len(per_vector) > 1 else float("nan")
    return statistics.fmean(per_vector), se


def _torch_eig(input: torch.Tensor, eigenvectors: bool = False):
    """torch.eig as PyHessian 0.1 calls it (removed in torch 2): (the eigenvalues as an (n, 2) tensor of real and
    imaginary parts, the eigenvectors as columns). PyHessian calls it on its Lanczos tridiagonal T alone, which is
    symmetric: torch.linalg.eigh gives its eigenpairs exactly, with zero imaginary parts."""
    values, vectors = torch.linalg.eigh(input)
    return torch.stack([values, torch.zeros_like(values)], dim=1), (vectors if eigenvectors else torch.empty(0))


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
PEERS = {"transformers": "transformers", "curvlinops": "curvlinops-for-pytorch",
         "hessian-eigenthings": "hessian-eigenthings", "PyHessian": "PyHessian", "scipy": "scipy"}


def header(threads: int, seconds: float | None = None) -> str:
    versions = ", ".join(f"{label} {_version(dist)}" for label, dist in PEERS.items())
    took = f"; the whole run took {seconds:.0f} s" if seconds is not None else ""
    return (f"torch {torch.__version__} ({threads} thread{'s' if threads != 1 else ''}); {versions}. Timings are from "
            f"one CPU run (median of {REPEATS} repeats each, beside whatever else the machine ran){took}.")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _fmt(x, digits: int = 6) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def markdown(rows: list[Row], threads: int, seconds: float) -> str:
    lines = ["# Peer cross-check of the Hessian probes", "", header(threads, seconds), "",
             "Relative difference: |ours - peer| / |peer| (Hv: ||Hv_ours - Hv_peer|| / ||Hv_peer||); ref. rel. diff.: "
             "the same against the float64 reference (module docstring of bnstudy/crosscheck.py). Products: "
             "Hessian-vector products (a peer's counted on its own product function).", "",
             "| model | quantity | mode | ours | peer | peer value | rel. diff. | ref. rel. diff. ours / peer "
             "| time ours / peer (s) | products ours / peer | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731  (a norm's bars would end the cell)
    for r in rows:
        lines.append(f"| {r.model} ({r.params:,}) | {cell(r.quantity)} | {cell(r.mode)} | {_fmt(r.ours)} | {r.peer} | "
                     f"{_fmt(r.peer_value)} | {_fmt(r.rel_diff, 2)} | {_fmt(r.ours_vs_ref, 2)} / "
                     f"{_fmt(r.peer_vs_ref, 2)} | {_fmt(r.time_ours, 3)} / {_fmt(r.time_peer, 3)} | "
                     f"{r.hvps_ours} / {r.hvps_peer} | {cell(r.note)} |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[Row], threads: int) -> str:
    """One line a row, plain CSV (the versions and threads as columns: crosscheck.md's header line says them too)."""
    buffer = io.StringIO()
    writer = None
    for r in rows:
        record = asdict(r) | {"peer_version": _version(PEERS[r.peer]), "torch": torch.__version__, "threads": threads}
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(record), lineterminator="\n")
            writer.writeheader()
        writer.writerow(record)
    return buffer.getvalue()


SAME_DRAWS = ("Hv (one vector)", "eig1", "eig2", "eig3", "trace (Hutchinson, ours' vectors)",
              "SLQ tr H (ours' start vectors)", "SLQ tr H^2 (ours' start vectors)")  # deterministic: no sampling error
SUMMARY_QUANTITY = {"eig": "top 3 eigenvalues", "trace": "trace, same 60 vectors",
                    "SLQ": "SLQ tr H, tr H², same vectors"}


def summary_markdown(table: str) -> str:
    """The README's table from crosscheck.csv's text: per model, peer and algorithm, the largest relative differences
    of the comparisons free of sampling error (same vectors both sides), with times and products."""
    groups: dict[tuple, list[dict]] = {}
    for row in csv.DictReader(io.StringIO(table)):
        if row["quantity"] in SAME_DRAWS[1:] and row["ours"] not in ("", "nan"):
            quantity = SUMMARY_QUANTITY[row["quantity"].split(" ")[0].rstrip("123")]
            groups.setdefault((row["model"], row["params"], row["peer"], quantity), []).append(row)
    lines = ["| model (parameters) | quantity | peer (its mode) | ours vs peer | ours vs float64 | peer vs float64 | "
             "time ours / peer (s) | products ours / peer |", "|---|---|---|---|---|---|---|---|"]
    for (model, params, peer, quantity), rows in groups.items():
        worst = {key: max(float(r[key]) for r in rows) for key in ("rel_diff", "ours_vs_ref", "peer_vs_ref")}
        first = rows[0]
        lines.append(f"| {model} ({int(params):,}) | {quantity} | {peer} ({first['mode'].split(' (')[0]}) | "
                     f"{worst['rel_diff']:.1e} | {worst['ours_vs_ref']:.1e} | {worst['peer_vs_ref']:.1e} | "
                     f"{float(first['time_ours']):.2f} / {float(first['time_peer']):.2f} | "
                     f"{first['hvps_ours']} / {first['hvps_peer']} |")
    return "\n".join(lines) + "\n"


def run(models=MODELS, threads: int = 1) -> list[Row]:
    from tqdm import tqdm

    torch.set_num_threads(threads)
    rows = []
    with tqdm(total=7 * len(models), desc="crosscheck", file=sys.stderr) as progress:
        for name in models:
            comparison = Comparison(name, progress)
            comparison.curvlinops()
            comparison.eigenthings()
            comparison.pyhessian()
            rows += comparison.rows
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnstudy.crosscheck", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = parser.parse_args(argv)
    from bnstudy.recording import atomic_write_text

    start = time.perf_counter()
    rows = run(args.models, args.threads)
    seconds = time.perf_counter() - start
    out = args.results_dir / "crosscheck"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "crosscheck.csv", table_csv(rows, args.threads))
    atomic_write_text(out / "crosscheck.md", markdown(rows, args.threads, seconds))
    atomic_write_text(out / "summary.md", summary_markdown(table_csv(rows, args.threads)))
    print(f"wrote {out / 'crosscheck.md'}, crosscheck.csv and summary.md ({len(rows)} rows, {seconds:.0f} s): "
          "the README's cross-check table is summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
