"""The interactive report: one self-contained, offline HTML file per image (`attnviz report`, `--format html`).

    >>> from attnviz.report import report
    >>> report("mhsa", "samples/scenes/scene_circle.png")   # [PosixPath('attnviz-out/scene_circle_mhsa_report.html')]

`data` turns captured maps into the arrays the page draws, `encode` how they travel (uint8 with each map's range),
`page` writes the HTML (script and style from `static/`, inline), `build` runs an image end to end.
"""

from __future__ import annotations

from attnviz.report.api import report

__all__ = ["report"]
