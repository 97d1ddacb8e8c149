"""One model's rows: ours against each peer, in the peer's own mode, and both against the reference."""
from __future__ import annotations

import copy
import importlib
import math
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from bnstudy.crosscheck.measure import Reference, counting, rademacher_stream, rel, timed, z_score
from bnstudy.crosscheck.models import (
    HE_STEPS, K, MAX_HVPS, REF_SAMPLES, REF_TOL, SEED, SLQ, TOL, TRACE_SAMPLES, bn_count, build, make_batch, peer_copy,
    set_bn_mode, trainable)

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
