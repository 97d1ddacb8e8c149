"""Curvature beyond the paper: lambda_max over training against 2/eta, and the Hessian's spectral density."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from bnstudy.analysis import curvature_summary, smoothed_density, spectrum_quadrature, spectrum_summary
from bnstudy.plots.style import ERRORBAR, arm_colors, finish
from bnstudy.reading import Results


def curvature(results: Results, order: tuple[str, ...] = ()):
    """lambda_max over training per arm with the stability line 2/eta; lambda_max / beta_eff where both were probed."""
    arms = results.arms(order)
    table = curvature_summary(results.tables["probes"], results.meta)
    colors = arm_colors(results, arms)
    has_beta = "lambda_over_beta" in table and table.lambda_over_beta.notna().any()
    fig, axes = plt.subplots(1, 2 if has_beta else 1, figsize=(13 if has_beta else 7, 4.6), squeeze=False)
    ax = axes[0][0]
    sns.lineplot(table, x="step", y="lambda_max", hue="arm", hue_order=arms, palette=colors, errorbar=ERRORBAR,
                 marker="o", ax=ax)
    for lr in sorted(table.lr.unique()):
        ax.axhline(2 / lr, color="0.4", ls="--", lw=1, label=f"2/η = {2 / lr:g}")
    ax.set(xlabel="training step", ylabel="λ_max of the Hessian (train-mode loss, step's batch)", yscale="log",
           title="top Hessian eigenvalue")
    ax.legend(fontsize=8, title=None)
    if has_beta:
        sns.lineplot(table, x="step", y="lambda_over_beta", hue="arm", hue_order=arms, palette=colors,
                     errorbar=ERRORBAR, marker="o", ax=axes[0][1])
        axes[0][1].set(xlabel="training step", ylabel="λ_max / β_eff (same step and batch)", yscale="log",
                       title="curvature against effective β-smoothness")
        axes[0][1].legend(fontsize=8, title=None)
    hvps = table.hvps.median()
    return finish(fig, f"{results.experiment}: curvature over training (beyond the paper)",
                  results.caption() + f" | Lanczos, median {hvps:.0f} Hessian-vector products per probe")


DENSITY_FLOOR = 1e-8  # of the panel's peak: the log axis shows the outliers' mass, not the kernel's far tails


def spectrum(results: Results, order: tuple[str, ...] = ()):
    """Hessian spectral densities (log density, as Ghorbani et al. draw them), one row per arm and BN mode, one column
    per probed step, a line per seed in the arm's colour; lambda_max (solid, black: red would be a norm's colour) and
    2/eta (dashed) marked; outliers and gradient share in the title."""
    quadrature = spectrum_quadrature(results.tables["probes"])
    summary = spectrum_summary(results.tables["probes"]).merge(results.meta[["arm", "seed", "lr"]], on=["arm", "seed"])
    arms = results.arms(order)
    colors = arm_colors(results, arms)
    panels = [(arm, mode) for arm in arms for mode in ("train", "eval")
              if ((quadrature.arm == arm) & (quadrature["mode"] == mode)).any()]
    steps = sorted(quadrature.step.unique())
    fig, axes = plt.subplots(len(panels), len(steps), figsize=(4.2 * len(steps), 2.8 * len(panels) + 0.8),
                             squeeze=False)
    for i, (arm, mode) in enumerate(panels):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            here = quadrature[(quadrature.arm == arm) & (quadrature["mode"] == mode) & (quadrature.step == step)]
            _densities_per_seed(ax, here, colors[arm])
            facts = summary[(summary.arm == arm) & (summary["mode"] == mode) & (summary.step == step)]
            if len(facts):
                ax.axvline(facts.lambda_max.median(), color="0.1", lw=1.2, label="λ_max")
                ax.axvline(2 / facts.lr.iloc[0], color="0.45", ls="--", lw=1, label="2/η")
                ax.set_title(f"{arm} ({mode} mode), step {step}\noutliers {facts.outliers.median():.0f}, "
                             f"grad share top-10 {100 * facts.share.median():.0f}%", fontsize=8)
            ax.set(yscale="log", xlabel="Hessian eigenvalue" if i == len(panels) - 1 else None,
                   ylabel="density (log)" if j == 0 else None)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    caption = results.caption() + " | Lanczos quadrature, Gaussian kernel 1% of the range; a line per seed"
    return finish(fig, f"{results.experiment}: Hessian spectral density over training", caption)


def _densities_per_seed(ax, quadrature, color) -> None:
    """One smoothed density per seed, the y axis from DENSITY_FLOOR below the highest peak."""
    peak = 0.0
    for _, run in quadrature.groupby("seed"):
        ritz = [v.theta.tolist() for _, v in run.groupby("vector")]
        weights = [v.tau.tolist() for _, v in run.groupby("vector")]
        grid, density = smoothed_density(ritz, weights)
        ax.plot(grid, density, lw=0.9, color=color, alpha=0.8)
        peak = max(peak, max(density))
    if peak > 0:
        ax.set_ylim(peak * DENSITY_FLOOR, peak * 3)  # the outliers' bumps sit about 1e-5 below the bulk
