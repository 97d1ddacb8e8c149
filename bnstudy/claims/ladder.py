"""The width ladder (docs/long.md): each claim's deciding number, per seed, at each width of the VGG trained on the
paper's schedule. Read from the verdicts the report judged, one scale (preset and width) at a time: the numbers are
the rules' own (Verdict.values), never recomputed, and no claim pools two widths."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pandas as pd

LADDER_PRESETS = ("long", "paper")  # the paper's schedule, 15,000 steps: long at widths below 1, paper at width 1
LADDER_COLUMNS = ["claim", "width", "preset", "seed", "value", "verdict"]


def width_of(chosen: dict[str, pd.DataFrame]) -> float | None:
    """The VGG width of one scale's runs (report.by_preset: one per scale), or None where they have none (the
    DLN's alone) or, in an unsplit preset, several."""
    widths = {w for table in chosen.values() if "width" in table for w in table.width.dropna()}
    return widths.pop() if len(widths) == 1 else None


def width_label(width: float) -> str:
    """0.125 -> '1/8', 1.0 -> '1': as the channels' fraction of the paper's VGG."""
    return str(Fraction(width).limit_denominator(64))


def ladder_scales(widths: dict[str, float | None], preset_of) -> dict[str, float]:
    """scale -> width, for the scales on the ladder (a ladder preset, one VGG width), narrowest first."""
    rungs = {scale: width for scale, width in widths.items()
             if width is not None and preset_of(scale) in LADDER_PRESETS}
    return dict(sorted(rungs.items(), key=lambda item: item[1]))


def ladder_points(judged: dict[str, list], rungs: dict[str, float], preset_of) -> pd.DataFrame:
    """One row per claim with a Statistic, rung and seed: the number its rule compared with the threshold there,
    and the verdict at that rung. Rungs where the claim was not measured have no rows."""
    rows = []
    for scale, width in rungs.items():
        for claim, verdict in judged[scale]:
            if claim.statistic is None or verdict.values is None:
                continue
            rows += [{"claim": claim.number, "width": width, "preset": preset_of(scale), "seed": int(seed),
                      "value": float(value), "verdict": verdict.verdict} for seed, value in verdict.values.items()]
    return pd.DataFrame(rows, columns=LADDER_COLUMNS)


def ladder_claims(points: pd.DataFrame, claims: list) -> list:
    """The claims with a figure on the ladder: a Statistic, and points to draw."""
    return [claim for claim in claims if claim.statistic is not None and (points.claim == claim.number).any()]


def ladder_path(folder: Path, claim) -> Path:
    """Where the ladder's figure of one claim goes (plots.ladder draws it; report links it)."""
    return folder / f"ladder-claim-{claim.number.split()[0]}.png"
