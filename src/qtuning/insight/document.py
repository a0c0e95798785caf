"""`Doc`: a tiny document model rendered to both Markdown and HTML, so each page is written once. HTML pages
embed their PNG plots as base64 data URIs and carry no script: one file, readable offline."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:4px solid #ff9800;padding:6px 10px;margin:6px 0}
.ok{background:#eef8ee;border-left:4px solid #4caf50;padding:6px 10px;margin:6px 0}
figure{display:inline-block;width:48%;margin:6px 0.5%;vertical-align:top}img.plot{width:100%;border:1px solid #eee}
figure.wide{width:90%}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;border:1px solid #ddd;
padding:8px;margin:4px 0 14px;font-size:13px;line-height:1.7}
.tok{border-radius:3px;padding:1px 0}.tok.kept{background:#e8f0fe}
.tok.pruned{background:#ffcdd2;text-decoration:line-through;text-decoration-color:#c62828}
.sample-head{font-size:0.9em;color:#555;margin-top:10px}
"""


# ---------------------------------------------------------------------------------- documents


@dataclass
class Doc:
    """Blocks rendered to Markdown (`markdown()`) and to one self-contained HTML page (`html()`)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def warnings(self, items: list[str], none_text: str = "no warnings") -> None:
        self.blocks.append(("warnings", list(items), none_text))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, png: bytes, alt: str, file_name: str | None = None, wide: bool = False) -> None:
        """file_name: where the Markdown version points (the PNG written next to it); HTML embeds it."""
        self.blocks.append(("image", png, alt, file_name, wide))

    def raw(self, html_text: str, markdown_text: str = "") -> None:
        self.blocks.append(("raw", html_text, markdown_text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += [f"{'#' * block[1]} {block[2]}", ""]
            elif kind == "para":
                out += [block[1], ""]
            elif kind == "warnings":
                out += [f"- **warning:** {w}" for w in block[1]] or [f"- {block[2]}"]
                out.append("")
            elif kind == "table":
                headers, rows = block[1], block[2]
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += [
                    "| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                    for row in rows
                ]
                out.append("")
            elif kind == "image":
                if block[3]:
                    out += [f"![{block[2]}]({block[3]})", ""]
            elif kind == "raw" and block[2]:
                out += [block[2], ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{_e(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f"<h{block[1]}>{_e(block[2])}</h{block[1]}>")
            elif kind == "para":
                body.append(f"<p>{_e(block[1])}</p>")
            elif kind == "warnings":
                body += [f'<div class="warn">warning: {_e(w)}</div>' for w in block[1]] or [
                    f'<div class="ok">{_e(block[2])}</div>'
                ]
            elif kind == "table":
                head = "".join(f"<th>{_e(h)}</th>" for h in block[1])
                rows = "".join(
                    "<tr>"
                    + "".join(
                        f'<td class="num">{_e(_cell(v))}</td>' if _is_number(v) else f"<td>{_e(_cell(v))}</td>"
                        for v in row
                    )
                    + "</tr>"
                    for row in block[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(block[1]).decode("ascii")
                wide = ' class="wide"' if block[4] else ""
                body.append(
                    f'<figure{wide}><img class="plot" alt="{_e(block[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_e(block[2])}</figcaption></figure>"
                )
            elif kind == "raw":
                body.append(block[1])
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
