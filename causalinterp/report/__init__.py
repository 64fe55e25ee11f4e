"""Reports of results: self-contained HTML (`html.render`), Markdown (`markdown.render`), plots, tables.

    from causalinterp.report import html, markdown
    html.render([r1, r2], "report.html")        # one file, plots embedded, no network
    markdown.render([r1, r2], "report.md")

`Result.to_html`, `Result.to_markdown` and `Result._repr_html_` call these.
"""
from . import html, markdown, plots, table

__all__ = ["html", "markdown", "plots", "table", "render_html", "render_markdown"]


def render_html(results, path=None, title: str = "causalinterp report", **kw) -> str:
    """Shortcut for `causalinterp.report.html.render`."""
    return html.render(results, path, title, **kw)


def render_markdown(results, path=None, title: str = "causalinterp report", **kw) -> str:
    """Shortcut for `causalinterp.report.markdown.render`."""
    return markdown.render(results, path, title, **kw)
