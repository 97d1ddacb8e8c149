"""What a reader sees wrong in a figure at a glance, found from the drawn artists: text past the figure's edges,
tick labels that run together, an axis label longer than its axis."""
from __future__ import annotations

import matplotlib.text

SLACK = 1.0  # pixels


def _shown_text(artists) -> list:
    return [t for t in artists if t.get_visible() and t.get_text().strip()]


def _ticks(axis) -> list:
    return axis.get_major_ticks() + axis.get_minor_ticks()


def _drawn_tick_labels(axis) -> list:
    """The tick labels matplotlib draws: those of ticks inside the axis' view (it makes labels beyond it too)."""
    low, high = sorted(axis.get_view_interval())
    return _shown_text(label for tick in _ticks(axis) if low <= tick.get_loc() <= high
                       for label in (tick.label1, tick.label2))


def _axes_of(fig) -> list:
    return [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]


def _past_the_edges(fig, renderer) -> list[str]:
    box = fig.bbox
    tick_labels = {id(label) for axis in _axes_of(fig) for tick in _ticks(axis) for label in (tick.label1, tick.label2)}
    texts = [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in tick_labels]
    texts += [label for axis in _axes_of(fig) for label in _drawn_tick_labels(axis)]
    defects = []
    for text in _shown_text(texts):
        extent = text.get_window_extent(renderer)
        if (extent.x0 < box.x0 - SLACK or extent.x1 > box.x1 + SLACK or extent.y0 < box.y0 - SLACK
                or extent.y1 > box.y1 + SLACK):
            defects.append(f"'{text.get_text()[:50]}' runs past the figure's edge")
    return defects


def _tick_labels_that_touch(ax, renderer) -> list[str]:
    defects = []
    for axis, start in ((ax.xaxis, "x0"), (ax.yaxis, "y0")):
        extents = sorted(((label.get_window_extent(renderer), label.get_text()) for label in _drawn_tick_labels(axis)),
                         key=lambda pair: getattr(pair[0], start))
        for (first, a), (second, b) in zip(extents, extents[1:]):
            if first.overlaps(second):
                defects.append(f"tick labels '{a}' and '{b}' of '{ax.get_title() or ax.get_ylabel()}' overlap")
    return defects


def _labels_longer_than_their_axis(ax, renderer) -> list[str]:
    label = ax.yaxis.label
    if not (label.get_visible() and label.get_text()):
        return []
    if label.get_window_extent(renderer).height > ax.get_window_extent(renderer).height * 1.02:
        return [f"y label '{label.get_text()[:50]}' is longer than its axis"]
    return []


def layout_defects(fig) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    defects = _past_the_edges(fig, renderer)
    for ax in fig.axes:
        defects += _tick_labels_that_touch(ax, renderer) + _labels_longer_than_their_axis(ax, renderer)
    return defects
