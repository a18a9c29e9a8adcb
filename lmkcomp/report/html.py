"""The report page: one self-contained `index.html` next to its images (relative links only,
no scripts, no network), readable offline in any browser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Sequence

from lmkcomp.fileio import atomic_write

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 90%; }
img { max-width: 100%; }
.note { color: #555; font-size: 90%; }
"""


@dataclass(frozen=True)
class Figure:
    """An image of the page and its caption; `path` is relative to the page."""

    path: str
    caption: str


@dataclass
class Section:
    """A heading, optional paragraphs, an optional table and figures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    columns: Sequence[str] = ()
    rows: Sequence[Sequence[object]] = ()
    figures: list[Figure] = field(default_factory=list)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def render(title: str, sections: Sequence[Section], footer: str = "") -> str:
    """The page's HTML."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>\n<h1>{escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2>")
        parts.extend(f"<p>{escape(text)}</p>" for text in section.paragraphs)
        if section.columns:
            parts.append(_table(section.columns, section.rows))
        for figure in section.figures:
            parts.append(f"<figure><img src=\"{escape(figure.path)}\" alt=\"{escape(figure.caption)}\">"
                         f"<figcaption>{escape(figure.caption)}</figcaption></figure>")
    if footer:
        parts.append(f"<p class=\"note\">{escape(footer)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_page(directory: str | Path, title: str, sections: Sequence[Section], footer: str = "") -> Path:
    """Write `directory/index.html` atomically; return its path."""
    path = Path(directory) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(render(title, sections, footer))
    return path
