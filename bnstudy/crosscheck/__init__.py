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
torch 2 removed: `comparison._torch_eig` stands in for it during that call alone (PyHessian only calls it on its
symmetric tridiagonal T, where torch.linalg.eigh is exact). transformers' default attention (SDPA) has no double
backward nor forward-mode AD in its fused CPU kernel: ours runs on the default-attention model (our probes take their
products under the math kernel), the peers and the reference on a copy built with attn_implementation="eager", same
weights.

The peers are imported inside functions only, and nothing else in the package imports this package: the main
environment has none of them (.venv-peers has, see the Makefile's `crosscheck`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bnstudy.crosscheck.comparison import Comparison, Row
from bnstudy.crosscheck.models import MODELS, build, make_batch, peer_copy  # noqa: F401  (tests/test_peers.py)
from bnstudy.crosscheck.tables import markdown, summary_markdown, table_csv


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
          "the cross-check table of docs/probes.md is summary.md")
    return 0

