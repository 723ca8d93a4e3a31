"""Markdown → PDF with pure-Python tools: markdown-it-py renders HTML, fpdf2 lays it out.

The Markdown stays the one source of truth; this only sizes tables and images to the page.
Fonts are the DejaVu faces that matplotlib ships, so α, ε, ±, ∞ print on any machine.
"""

import re
from pathlib import Path

import matplotlib
from fpdf import FPDF, FontFace, TextStyle
from markdown_it import MarkdownIt
from markdown_it.token import Token
from PIL import Image

_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
_FACES = {
    "": "DejaVuSans.ttf",
    "B": "DejaVuSans-Bold.ttf",
    "I": "DejaVuSans-Oblique.ttf",
    "BI": "DejaVuSans-BoldOblique.ttf",
}
BODY_PT = 9.5
TABLE_PT = 7.5
_MAX_IMAGE_HEIGHT = 0.62  # of the printable page height, so a figure and its caption fit
_MIN_TABLE_PT = 4.5  # a wide table shrinks to this before any word would break
_CELL_PADDING_MM = 2.5
_WRAP_CELLS_LONGER_THAN = 20  # characters; longer cells wrap rather than widen their column
_BREAK_AFTER = re.compile(r"(?<=\w[-/_])(?=\w)")
"""Where a table cell's long name may wrap (a zero-width space there): after a hyphen, slash or
underscore inside a word, so "t100/teacher" wraps as "t100/" "teacher", never mid-word as
"t100/teach" "er", and a minus sign stays on its number ("-0.21")."""
_KEEP_TOGETHER = re.compile(
    r"(?<=<) (?=\d)|(?<=[\d%p]) (?=\[)|(?<=\d,) (?=[-+]?[\d.]+\])|(?<=\d) (?=pp\b)"
)
"""Spaces a line must not break at (a no-break space there): between an estimate and its interval
and inside the interval, "0.942 [0.80, 1.16]", "+1.5 pp [+0.2, +2.8]", and before a unit."""
_NEW_PAGE_BELOW = 0.7  # a section starting lower on the page starts on the next one
_STYLES = {
    "h1": TextStyle(font_size_pt=17, color=(0, 0, 0), t_margin=2, b_margin=0.4),
    "h2": TextStyle(font_size_pt=13.5, color=(20, 40, 90), t_margin=6, b_margin=0.3),
    "h3": TextStyle(font_size_pt=11, color=(20, 40, 90), t_margin=4, b_margin=0.3),
    "code": FontFace(family="dejavumono"),
}


def markdown_to_pdf(markdown: str, base_dir: Path, out: Path, title: str = "") -> Path:
    """Render `markdown` (image paths relative to `base_dir`) to the PDF file `out`."""
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(title)
    for style, name in _FACES.items():
        pdf.add_font("dejavu", style, str(_FONT_DIR / name))
    pdf.add_font("dejavumono", "", str(_FONT_DIR / "DejaVuSansMono.ttf"))
    pdf.add_page()
    pdf.set_font("dejavu", size=BODY_PT)
    html = _html(markdown, base_dir, pdf)
    for section in re.split(r"(?=<h2>)", html):
        if section.startswith("<h2>") and pdf.get_y() > _NEW_PAGE_BELOW * pdf.h:
            pdf.add_page()
        pdf.write_html(
            section,
            font_family="dejavu",
            li_prefix_color=(0, 0, 0),
            table_line_separators=True,
            tag_styles=_STYLES,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


def _html(markdown: str, base_dir: Path, pdf: FPDF) -> str:
    """HTML for fpdf2: absolute image paths sized to fit, tables sized to their text."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    in_table = False
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            _size_table(tokens, i, pdf)
        in_table = (in_table or token.type == "table_open") and token.type != "table_close"
        for child in token.children or []:
            if child.type == "image":
                _size_image(child, base_dir, pdf)
            elif in_table and child.type in ("text", "code_inline"):
                child.content = _KEEP_TOGETHER.sub("\u00a0", child.content)
                child.content = _BREAK_AFTER.sub("\u200b", child.content)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", lambda *a: "</table></font>")
    return md.renderer.render(tokens, md.options, {})


def _table_open(_renderer: object, tokens: list[Token], idx: int, *_: object) -> str:
    token = tokens[idx]
    return (
        f'<font size="{token.attrGet("data-pt")}">'
        f'<table width="{token.attrGet("width")}" align="LEFT">'
    )


def _size_table(tokens: list[Token], start: int, pdf: FPDF) -> None:
    """Size each column to its longest cell (long cells wrap, headers at their longest word) and
    the table to its columns. Where that is wider than the page, wrapped columns give up width
    first, down to their longest unbreakable word; only where even those do not fit does the font
    shrink (never below `_MIN_TABLE_PT`), so no word is broken inside a cell."""
    pdf.set_font("dejavu", size=TABLE_PT)
    wrap_mm = pdf.get_string_width("x" * _WRAP_CELLS_LONGER_THAN)
    wanted: list[float] = []  # per column: the text width it would like, at TABLE_PT
    least: list[float] = []  # per column: its longest unbreakable word, at TABLE_PT
    headers: list[Token] = []
    column = 0
    for j in range(start + 1, len(tokens)):
        token = tokens[j]
        if token.type == "table_close":
            break
        if token.type == "tr_open":
            column = 0
        elif token.type in ("th_open", "td_open"):
            inline = tokens[j + 1]  # its children hold the text as printed (escapes undone)
            text = (
                "".join(c.content for c in inline.children or []) if inline.type == "inline" else ""
            )
            text = _KEEP_TOGETHER.sub("\u00a0", text)
            words = _BREAK_AFTER.sub(" ", text).split(" ")
            bold = 1.1 if token.type == "th_open" else 1.0
            word_mm = bold * max(map(pdf.get_string_width, words), default=0.0)
            if token.type == "th_open":
                headers.append(token)
                want = max(word_mm, bold * min(pdf.get_string_width(text), wrap_mm / 2))
            else:
                token.attrSet("align", "left")  # fpdf2 would justify wrapped cells
                want = max(min(pdf.get_string_width(text), wrap_mm), word_mm)
            if column == len(wanted):
                wanted.append(0.0)
                least.append(0.0)
            wanted[column] = max(wanted[column], want)
            least[column] = max(least[column], word_mm)
            column += 1
    text_mm, scale = _fit(wanted, least, pdf.epw - _CELL_PADDING_MM * len(wanted))
    widths = [w + _CELL_PADDING_MM for w in text_mm]
    total = sum(widths)
    tokens[start].attrSet("width", f"{min(100.0, 100 * total / pdf.epw):.1f}%")
    tokens[start].attrSet("data-pt", f"{scale * TABLE_PT:.2f}")
    for token, width in zip(headers, widths, strict=False):
        token.attrSet("width", f"{100 * width / total:.1f}%")
    pdf.set_font("dejavu", size=BODY_PT)


def _fit(wanted: list[float], least: list[float], room: float) -> tuple[list[float], float]:
    """Column text widths within `room` (mm) and the font scale they assume: the wanted widths
    where they fit; else each between its least and wanted width, in proportion; else the least
    widths at the font scale that makes them fit (at least `_MIN_TABLE_PT`)."""
    if sum(wanted) <= room:
        return wanted, 1.0
    spare = sum(wanted) - sum(least)
    if sum(least) <= room:
        give = (room - sum(least)) / spare if spare > 0 else 0.0
        return [lo + (w - lo) * give for w, lo in zip(wanted, least, strict=True)], 1.0
    scale = max(_MIN_TABLE_PT / TABLE_PT, room / sum(least))
    return [lo * scale for lo in least], scale


def _size_image(token: Token, base_dir: Path, pdf: FPDF) -> None:
    """Point the image at its file and set a width (in px, as fpdf2 reads it) that fits the page.
    Only a PNG file inside the report's own folder is embedded; any other source (an absolute
    path, `..`, a URL, which only a crafted name could put there) becomes its alt text."""
    root = base_dir.resolve()
    path = (root / str(token.attrGet("src"))).resolve()
    if not path.is_relative_to(root) or path.suffix != ".png" or not path.is_file():
        alt = "".join(child.content for child in token.children or [])
        token.type, token.tag, token.children, token.attrs = "text", "", None, {}
        token.content = f"[image not embedded: {alt}]"
        return
    with Image.open(path) as image:
        w_px, h_px = image.size
        dpi = image.info.get("dpi", (150, 150))[0]
    natural_mm = w_px / dpi * 25.4
    max_h = (pdf.h - pdf.t_margin - pdf.b_margin) * _MAX_IMAGE_HEIGHT
    width_mm = min(pdf.epw, natural_mm, max_h * w_px / h_px)
    token.attrSet("src", str(path))
    token.attrSet("width", f"{width_mm * pdf.k:.1f}")
