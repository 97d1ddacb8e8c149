"""Tidy records -> the derived numbers that figures and the report share (pure pandas, no plotting)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def matches(frame: pd.DataFrame, query: dict) -> pd.Series:
    """Which rows' configuration columns (norm, lr, init, ...) equal every value of `query` (floats to 1e-9):
    how claims and figures find runs by what they are. A column the frame lacks matches nothing."""
    mask = pd.Series(True, index=frame.index)
    for key, value in query.items():
        column = frame[key] if key in frame else pd.Series(index=frame.index, dtype=object)
        mask &= (np.isclose(pd.to_numeric(column, errors="coerce"), value, rtol=1e-9, atol=0)
                 if isinstance(value, float) else column.eq(value))
    return mask


PLAIN, FILTER = "landscape", "landscape-filter"  # the probe names of the two directions (bnstudy.probes.landscape)

# The activation recorder's `stat` names (bnstudy.probes.activations writes them; figures read them back): percentiles
# at every recording, and at `density_at` steps the quantile function, 1% a bin, from which Fig. 6 draws densities
PERCENTILES = {"p05": 0.05, "p15": 0.15, "p50": 0.50, "p85": 0.85, "p95": 0.95}
DENSITY = {f"q{i:02d}": i / 100 for i in range(1, 100)}

# The spectral density's smoothing (bnstudy.probes.spectrum.spectral_density, and the spectrum figure from recorded
# Ritz values): a Gaussian kernel of width SIGMA x the Ritz values' range, on GRID_POINTS points
GRID_POINTS = 1_000
SIGMA = 0.01


def smoothed_density(ritz: list[list[float]], weights: list[list[float]], sigma: float = SIGMA,
                     grid_points: int = GRID_POINTS) -> tuple[list[float], list[float]]:
    """The average over start vectors of sum_i tau_i N(t; theta_i, s^2), s = sigma x the Ritz values' range, on a
    grid padded by 5 s on each side; normalized to integrate to 1 on the grid (the tails cut off are < 1e-6)."""
    theta = np.array([t for row in ritz for t in row], dtype=np.float64)
    tau = np.array([w for row in weights for w in row], dtype=np.float64) / len(ritz)
    width = sigma * max(float(theta.max() - theta.min()), 1e-12)
    grid = np.linspace(theta.min() - 5 * width, theta.max() + 5 * width, grid_points)
    kernel = np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / width) ** 2) / (width * np.sqrt(2 * np.pi))
    density = kernel @ tau
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return grid.tolist(), (density / integrate(density, grid)).tolist()


def landscape_summary(probes: pd.DataFrame, probe: str = PLAIN) -> pd.DataFrame:
    """One row per (arm, seed, step) landscape probe: loss_min/max and grad_diff_min/max over eta, grad_norm,
    loss_at_w, beta_eff = max over eta of grad_diff / step_norm (PAPER.md Fig. 4), and the scale-free numbers:
    overshoot = loss_max / loss_at_w, rel_grad_diff_max = grad_diff_max / grad_norm, and beta_rel = max over eta of
    (grad_diff / grad_norm) / eta, the relative gradient change per relative step (along the filter-normalized
    gradient eta is the step as a fraction of each filter's norm; along the plain gradient beta_rel has no such
    meaning and is not read)."""
    land = probes[probes.probe == probe]
    keys = ["arm", "seed", "step"]
    per_eta = land[land.eta > 0].pivot_table(index=keys + ["eta"], columns="metric", values="value").reset_index()
    at_w = land[land.eta == 0].pivot_table(index=keys, columns="metric", values="value")
    per_eta = per_eta.merge(at_w.grad_norm.rename("g").reset_index(), on=keys, how="left")
    per_eta["beta"] = per_eta.grad_diff / per_eta.step_norm
    per_eta["beta_rel"] = per_eta.grad_diff / per_eta.g / per_eta.eta
    summary = per_eta.groupby(keys).agg(loss_min=("loss", "min"), loss_max=("loss", "max"),
                                        grad_diff_min=("grad_diff", "min"), grad_diff_max=("grad_diff", "max"),
                                        beta_eff=("beta", "max"), beta_rel=("beta_rel", "max"))
    summary = summary.join(at_w.rename(columns={"loss": "loss_at_w"})).reset_index()
    return summary.assign(overshoot=summary.loss_max / summary.loss_at_w,
                          rel_grad_diff_min=summary.grad_diff_min / summary.grad_norm,
                          rel_grad_diff_max=summary.grad_diff_max / summary.grad_norm,
                          loss_ratio=summary.loss_max / summary.loss_min)


def curvature_summary(probes: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step) curvature probe: lambda_max, HVPs used, the run's LR (meta.json), and, where
    the landscape probe ran at the same step, beta_eff and lambda_max / beta_eff. (Runs written before eta meant the
    landscape step size alone have the LR in eta too; it is not read.)"""
    curv = probes[probes.probe == "curvature"]
    table = curv.pivot_table(index=["arm", "seed", "step"], columns="metric", values="value").reset_index()
    table = table.rename(columns={"eig1": "lambda_max"}).merge(meta[["arm", "seed", "lr"]], on=["arm", "seed"])
    if (probes.probe == "landscape").any():
        beta = landscape_summary(probes)[["arm", "seed", "step", "beta_eff"]]
        table = table.merge(beta, on=["arm", "seed", "step"], how="left")
        table["lambda_over_beta"] = table.lambda_max / table.beta_eff
    return table


EARLY = 0.25  # "early in training": the first quarter of the probed steps of a run


def phase(frame: pd.DataFrame) -> pd.Series:
    """'early' for each run's probes in the first EARLY of its probed steps, 'late' after."""
    def label(steps: pd.Series) -> pd.Series:
        return (steps > steps.min() + EARLY * (steps.max() - steps.min())).map({False: "early", True: "late"})
    return frame.groupby(["arm", "seed"]).step.transform(label)


def phase_medians(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per run, the median of each column early and late, as columns '<phase>_<column>'."""
    medians = frame.assign(phase=phase(frame)).groupby(["arm", "seed", "phase"])[columns].median().unstack()
    medians.columns = [f"{p}_{column}" for column, p in medians.columns]
    return medians.reset_index()


CHANCE = 0.1  # CIFAR-10: ten balanced classes
TRAINS_MARGIN = 0.1  # "still trains": final training accuracy at least this far above chance


def kind_label(norm, init):
    """The label of a kind (norm and init), e.g. 'none, kaiming': works on strings and on Series alike."""
    return norm + ", " + init


def arm_kind(meta: pd.DataFrame) -> pd.Series:
    """What a run is apart from its LR and seed: its norm and its init, e.g. 'none, kaiming'."""
    init = meta["init"] if "init" in meta else pd.Series("glorot", index=meta.index)
    return kind_label(meta.norm, init.fillna("glorot"))


def sweep_table(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a learning-rate sweep: kind (norm, init), lr, seed, final training accuracy, whether
    it trains, and `scored`: that accuracy with a diverged run counted as chance."""
    table = meta[["arm", "seed", "norm", "lr", "status", "diverged_at", "final_train_acc_last100"]].copy()
    table["kind"] = arm_kind(meta)
    table["init"] = meta["init"] if "init" in meta else "glorot"
    table["trains"] = (table.status == "complete") & (table.final_train_acc_last100 >= CHANCE + TRAINS_MARGIN)
    table["scored"] = table.final_train_acc_last100.where(table.status == "complete", CHANCE)
    return table.sort_values(["kind", "lr", "seed"])


def largest_trainable_lr(table: pd.DataFrame) -> pd.Series:
    """Per kind (norm, init): the largest LR at which every seed still trains (NaN where none does)."""
    per_lr = table.groupby(["kind", "lr"]).trains.all().reset_index()
    return per_lr[per_lr.trains].groupby("kind").lr.max().reindex(table.kind.unique())


def best_lr(table: pd.DataFrame) -> pd.Series:
    """Per kind: the LR whose training accuracy (last 100 steps, diverged = chance), averaged over seeds, is highest:
    one LR per kind for every seed, so a seed's luck does not pick its own LR."""
    mean = table.groupby(["kind", "lr"]).scored.mean().reset_index()
    return mean.loc[mean.groupby("kind").scored.idxmax()].set_index("kind").lr


# ----------------------------------------------------------------------------------------------
# The weights probe (bnstudy.probes.weights) and the training curve's first steps
# ----------------------------------------------------------------------------------------------
BN_KINDS = ("batch", "noisy-batch")  # norms that make the weight layer before them scale-invariant


def weights_summary(probes: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step, layer >= 1) of the weights probe, with the run's LR and norm and
    eff_step = eta ||g|| / ||W||, cosine = cos(g, W), identity_error = |(||W'||^2 - ||W||^2) - eta^2 ||g||^2| /
    (eta^2 ||g||^2) (Arora et al.), and scale_invariant: the layer is followed by BN (every layer but the last of
    a BN network)."""
    rows = probes[(probes.probe == "weights") & (probes.layer >= 1)]
    table = rows.pivot_table(index=["arm", "seed", "step", "layer"], columns="metric", values="value").reset_index()
    table = table.merge(meta[["arm", "seed", "lr", "norm"]], on=["arm", "seed"])
    squared_step = table.lr ** 2 * table.grad_norm ** 2
    last = table.groupby(["arm", "seed"]).layer.transform("max")
    return table.assign(eff_step=table.lr * table.grad_norm / table.w_norm,
                        cosine=table.grad_dot_w / (table.grad_norm * table.w_norm),
                        identity_error=(table.sq_norm_change - squared_step).abs() / squared_step,
                        scale_invariant=table.norm.isin(BN_KINDS) & (table.layer < last))


def weights_per_step(weights: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, seed, step): the mean effective step over the layers before a norm (all but the last: the ones
    BN makes scale-invariant, where it has BN), the median identity error over the scale-invariant ones, and
    ||W|| / ||W_0|| over every weight layer taken as one vector."""
    hidden = weights[weights.layer < weights.groupby(["arm", "seed"]).layer.transform("max")]
    keys = ["arm", "seed", "step"]
    table = hidden.groupby(keys).eff_step.mean().to_frame()
    table["identity_error"] = weights[weights.scale_invariant].groupby(keys).identity_error.median()
    total = (weights.w_norm ** 2).groupby([weights[k] for k in keys]).sum() ** 0.5
    table["w_norm_ratio"] = total / total.groupby(level=["arm", "seed"]).transform("first")
    return table.reset_index()


# ----------------------------------------------------------------------------------------------
# The spectrum probe (bnstudy.probes.spectrum)
# ----------------------------------------------------------------------------------------------
BULK_WEIGHT = 1e-3  # a Ritz value with at least this quadrature weight carries bulk mass: an isolated eigenvalue
# carries ~(u . v)^2 / n ~ 1 / n (1e-6 for the quick VGG's 1e6 parameters), a node of the bulk ~1 / m (m = 30)


def spectrum_quadrature(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per Ritz value: arm, seed, step, mode (train | eval), vector (from 1), theta, tau."""
    rows = probes[probes.probe.str.startswith("spectrum-") & (probes.layer >= 1)]
    parts = rows.metric.str.split("_", expand=True)
    table = rows.assign(mode=rows.probe.str.removeprefix("spectrum-"), kind=parts[0], node=parts[1].astype(int),
                        vector=rows.layer)
    return table.pivot_table(index=["arm", "seed", "step", "mode", "vector", "node"], columns="kind",
                             values="value").reset_index()


def spectrum_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, seed, step, mode): bulk_edge (per start vector the largest Ritz value with weight >=
    BULK_WEIGHT; the median over vectors), lambda_max (top1), outliers (how many of the top-k Ritz values lie above
    the bulk edge: unconverged ones are lower bounds, so the count can only be low), share (the gradient's share in
    the top-k Ritz vectors) and converged (whether all k met the tolerance)."""
    quadrature = spectrum_quadrature(probes)
    keys = ["arm", "seed", "step", "mode"]
    edge = quadrature[quadrature.tau >= BULK_WEIGHT].groupby(keys + ["vector"]).theta.max().groupby(keys).median()
    rows = probes[probes.probe.str.startswith("spectrum-") & (probes.layer == 0)]
    top = rows.assign(mode=rows.probe.str.removeprefix("spectrum-")).pivot_table(
        index=keys, columns="metric", values="value")  # an unconverged (NaN) top-k was left out by reading: NaN here
    tops = [c for c in top.columns if c.startswith("top")]
    share = next(c for c in top.columns if c.startswith("share_top"))
    table = pd.DataFrame({"bulk_edge": edge, "lambda_max": top["top1"], "share": top[share],
                          "converged": top["converged"].astype(bool)})
    above = top[tops].gt(table.bulk_edge, axis=0).sum(axis=1)
    table["outliers"] = above.where(top[tops].notna().all(axis=1))
    return table.reset_index()


def at_mid_training(frame: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Per run, the rows of its probed step closest to half its steps (meta.json's `steps`)."""
    frame = frame.merge(steps[["arm", "seed", "steps"]], on=["arm", "seed"])
    distance = (frame.step - frame.steps / 2).abs()
    nearest = distance.groupby([frame.arm, frame.seed]).transform("min")
    return frame[distance == nearest].drop(columns="steps")


LEAVES_CHANCE = CHANCE + 0.05  # "left chance": the recent training accuracy at least 5 points above chance
LEAVES_WINDOW = 10  # steps averaged (1,280 examples at batch 128: chance's 10% has a standard error of 0.8 points)


def left_chance_at(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run, the first step at which the mean training accuracy over the last LEAVES_WINDOW steps is at least
    LEAVES_CHANCE (NaN if never)."""
    acc = metrics[(metrics.split == "train") & (metrics.metric == "acc")].sort_values("step")
    rolling = acc.groupby(["arm", "seed"]).value.transform(lambda v: v.rolling(LEAVES_WINDOW).mean())
    above = acc[rolling >= LEAVES_CHANCE]
    first = above.groupby(["arm", "seed"]).step.min().rename("left_chance_at")
    runs = acc[["arm", "seed"]].drop_duplicates().set_index(["arm", "seed"])
    return runs.join(first).reset_index()


REACHES = 0.6  # claim 1b: "reaches 60% training accuracy", the mean over the last REACH_WINDOW steps
REACH_WINDOW = 100  # steps (12,800 examples at batch 128: a standard error of 0.4 points at 60%)


def reached_at(metrics: pd.DataFrame, level: float = REACHES) -> pd.DataFrame:
    """Per run, the first step at which the mean training accuracy over the last REACH_WINDOW steps is at least
    `level` (NaN if never): column 'reached_at'."""
    acc = metrics[(metrics.split == "train") & (metrics.metric == "acc")].sort_values("step")
    rolling = acc.groupby(["arm", "seed"]).value.transform(lambda v: v.rolling(REACH_WINDOW).mean())
    first = acc[rolling >= level].groupby(["arm", "seed"]).step.min().rename("reached_at")
    return acc[["arm", "seed"]].drop_duplicates().set_index(["arm", "seed"]).join(first).reset_index()


def moment_changes(acts: pd.DataFrame) -> pd.DataFrame:
    """Per arm, seed, layer and recorded t: mean over units of |mu_{t+1} - mu_t|, |var_{t+1} - var_t|,
    |mu_t - mu_0| and |var_t - var_0| (Fig. 8; NaN drift at t = 0)."""
    moments = acts[acts.stat.isin(["mean", "var"])].pivot_table(
        index=["arm", "seed", "layer", "unit", "step"], columns="stat", values="value").reset_index()
    moments = moments.sort_values("step")
    keys = ["arm", "seed", "layer", "unit"]
    grouped = moments.groupby(keys)
    nxt = grouped[["step", "mean", "var"]].shift(-1)
    first = grouped[["mean", "var"]].transform("first")
    t0 = grouped.step.transform("min")
    per_unit = moments.assign(
        d_mean=(nxt["mean"] - moments["mean"]).abs(), d_var=(nxt["var"] - moments["var"]).abs(),
        drift_mean=(moments["mean"] - first["mean"]).abs().where(moments.step > t0),
        drift_var=(moments["var"] - first["var"]).abs().where(moments.step > t0),
    )[nxt.step == moments.step + 1]  # only t whose t+1 was recorded: true one-step changes
    return per_unit.groupby(["arm", "seed", "layer", "step"], as_index=False)[
        ["d_mean", "d_var", "drift_mean", "drift_var"]].mean()


KEYS = ["arm", "seed"]


def _landscape_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """early_/late_ medians of the landscape band and beta_eff, and beta_eff's median over the run."""
    probes = tables["probes"]
    if not (probes.probe == PLAIN).any():
        return []
    land = landscape_summary(probes)
    return [phase_medians(land, ["grad_diff_max", "beta_eff", "loss_ratio", "overshoot"]),
            land.groupby(KEYS).beta_eff.median().rename("beta_eff_median").reset_index()]


def _filter_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """filter_<phase>_<column>: the same along the filter-normalized gradient."""
    probes = tables["probes"]
    if not (probes.probe == FILTER).any():
        return []
    medians = phase_medians(landscape_summary(probes, FILTER), ["loss_ratio", "rel_grad_diff_max", "beta_rel"])
    return [medians.rename(columns=lambda c: c if c in KEYS else f"filter_{c}")]


def _reach_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    return [reached_at(tables["metrics"])] if (tables["metrics"].metric == "acc").any() else []


def _ics_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """ics_<metric>_median_L<layer>."""
    ics_rows = tables["probes"][tables["probes"].probe == "ics"]
    if ics_rows.empty:
        return []
    ics = ics_rows.groupby(["arm", "seed", "layer", "metric"]).value.median().unstack(["metric", "layer"])
    ics.columns = [f"ics_{metric}_median_L{layer}" for metric, layer in ics.columns]
    return [ics.reset_index()]


def _curvature_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    if not (tables["probes"].probe == "curvature").any():
        return []
    curv = curvature_summary(tables["probes"], meta).assign(eta_lambda=lambda d: d.lr * d.lambda_max)
    return [phase_medians(curv, ["lambda_max", "eta_lambda"])]


def _weights_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """early_/late_eff_step, identity_error_median, and the step each run left chance at."""
    if not (tables["probes"].probe == "weights").any():
        return []
    per_step = weights_per_step(weights_summary(tables["probes"], meta))
    identity = per_step.groupby(KEYS).identity_error.median().rename("identity_error_median")
    return [phase_medians(per_step, ["eff_step"]).merge(identity.reset_index(), on=KEYS),
            left_chance_at(tables["metrics"])]


def _spectrum_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """mid_<column>_<mode> at mid-training."""
    probes = tables["probes"]
    if not probes.probe.str.startswith("spectrum-").any():
        return []
    mid = at_mid_training(spectrum_summary(probes), meta).pivot_table(
        index=KEYS, columns="mode", values=["outliers", "share", "lambda_max", "bulk_edge"])
    mid.columns = [f"mid_{column}_{mode}" for column, mode in mid.columns]
    return [mid.reset_index()]


def _moment_columns(meta: pd.DataFrame, tables: dict) -> list[pd.DataFrame]:
    """d_mean_L<layer>, d_var_L<layer>: mean step-to-step moment changes."""
    if not len(tables["activations"]):
        return []
    changes = moment_changes(tables["activations"]).groupby(["arm", "seed", "layer"])[["d_mean", "d_var"]].mean()
    changes = changes.unstack("layer")
    changes.columns = [f"{metric}_L{layer}" for metric, layer in changes.columns]
    return [changes.reset_index()]


# What a run's summary holds beyond its meta.json: each entry reads the tables and returns frames keyed by
# (arm, seed), merged in this order (so summary.csv's columns keep it). register_summary adds one of your own.
SUMMARIES: list = [_landscape_columns, _filter_columns, _reach_columns, _ics_columns, _curvature_columns,
                   _weights_columns, _spectrum_columns, _moment_columns]


def register_summary(summarize) -> None:
    """summarize(meta, tables) -> [frames keyed by arm and seed]: its columns join every run summary from now on."""
    if summarize not in SUMMARIES:
        SUMMARIES.append(summarize)


def run_summary(meta: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per arm x seed with the numbers the claims use."""
    keep = ["arm", "seed", "norm", "init", "lr", "steps", "preset", "dataset", "status", "diverged_at", "steps_done",
            "wall_time_s", "final_train_acc_last100", "final_test_acc", "final_test_acc_recal", "final_train_loss"]
    summary = meta[[c for c in keep if c in meta]].copy()
    for summarize in SUMMARIES:
        for frame in summarize(meta, tables):
            summary = summary.merge(frame, on=KEYS, how="left")
    return summary.sort_values(["arm", "seed"]).reset_index(drop=True)
