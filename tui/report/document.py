"""A report as a list of blocks, written once and rendered twice: Markdown (figures as PNG
files beside it) and one self-contained HTML page (figures inlined as base64).

Text may hold `inline code` in backticks; nothing else is interpreted, so a run's error
message or a tag cannot inject markup into either output.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: int = 1  # the first ``left`` columns are text (left-aligned), the rest numbers


@dataclass(frozen=True)
class Image:
    path: str  # relative to the Markdown file
    alt: str
    png: bytes


Block = Heading | Paragraph | Bullets | Table | Image


# ----------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        match block:
            case Heading(text, level):
                out.append(f"{'#' * level} {text}")
            case Paragraph(text):
                out.append(text)
            case Bullets(items):
                out.append("\n".join(f"- {item}" for item in items))
            case Table(columns, rows, left):
                align = [":---" if i < left else "---:" for i in range(len(columns))]
                lines = [columns, align, *rows]
                out.append("\n".join("| " + " | ".join(map(_md_cell, line)) + " |"
                                     for line in lines))
            case Image(path, alt, _):
                out.append(f"![{alt}]({path})")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 1rem 0; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def _cells(values: Sequence[str], tag: str, left: int) -> str:
    numeric = ' class="num"'
    return "".join(f"<{tag}{'' if i < left else numeric}>{_inline(v)}</{tag}>"
                   for i, v in enumerate(values))


def to_html(blocks: Sequence[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        match block:
            case Heading(text, level):
                body.append(f"<h{level}>{_inline(text)}</h{level}>")
            case Paragraph(text):
                body.append(f"<p>{_inline(text)}</p>")
            case Bullets(items):
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            case Table(columns, rows, left):
                head = f"<tr>{_cells(columns, 'th', left)}</tr>"
                rows_html = "".join(f"<tr>{_cells(r, 'td', left)}</tr>" for r in rows)
                body.append(f"<table><thead>{head}</thead><tbody>{rows_html}</tbody></table>")
            case Image(_, alt, png):
                data = base64.b64encode(png).decode("ascii")
                body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
