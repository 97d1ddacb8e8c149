"""The rows as CSV and Markdown, and the summary table of docs/probes.md."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict
from importlib import metadata

import torch

from bnstudy.crosscheck.comparison import Row
from bnstudy.crosscheck.models import REPEATS

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
             "the same against the float64 reference (module docstring of bnstudy/crosscheck/__init__.py). Products: "
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
    """docs/probes.md's table from crosscheck.csv's text: per model, peer and algorithm, the largest relative
    differences of the comparisons free of sampling error (same vectors both sides), with times and products."""
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
