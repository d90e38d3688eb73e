"""Short reports that come with every artefact: the same content as Markdown and as HTML."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
          "color:#222}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}"
          "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
          "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


@dataclass
class Report:
    title: str
    _blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self._blocks.append(("heading", text))

    def text(self, text: str) -> None:
        self._blocks.append(("text", text))

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self._blocks.append(("table", (header, [[_cell(v) for v in row] for row in rows])))

    def figure(self, fig: plt.Figure, name: str, caption: str) -> None:
        self._blocks.append(("figure", (fig, name, caption)))

    def save(self, directory: str | Path) -> Path:
        """Write report.md, report.html and the figures' PNGs; return the HTML path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        md, body = [f"# {self.title}"], [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, content in self._blocks:
            if kind == "heading":
                md.append(f"## {content}")
                body.append(f"<h2>{html.escape(content)}</h2>")
            elif kind == "text":
                md.append(content)
                body.append(f"<p>{html.escape(content)}</p>")
            elif kind == "table":
                md.append(markdown_table(*content))
                body.append(_html_table(*content))
            else:
                fig, name, caption = content
                fig.savefig(directory / f"{name}.png", dpi=110, bbox_inches="tight")
                plt.close(fig)
                md.append(f"![{caption}]({name}.png)\n\n*{caption}*")
                body.append(f'<figure><img src="{name}.png" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        (directory / "report.md").write_text("\n\n".join(md) + "\n")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
        (directory / "report.html").write_text(page)
        return directory / "report.html"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
