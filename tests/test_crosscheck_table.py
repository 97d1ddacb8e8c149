"""The cross-check table in docs/probes.md is the committed results' (results/crosscheck), never typed by hand."""
import re
from pathlib import Path

from bnstudy.crosscheck import summary_markdown

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "crosscheck"


def test_the_summary_is_computed_from_the_committed_rows():
    assert (RESULTS / "summary.md").read_text(encoding="utf-8") == summary_markdown(
        (RESULTS / "crosscheck.csv").read_text(encoding="utf-8"))


def test_the_probes_page_shows_the_summary():
    page = (ROOT / "docs" / "probes.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- crosscheck:begin[^>]*-->\n(.*?)<!-- crosscheck:end -->", page, re.S)
    assert block is not None and block.group(1) == (RESULTS / "summary.md").read_text(encoding="utf-8")
