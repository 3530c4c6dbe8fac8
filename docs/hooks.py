"""mkdocs hook: the site's home page is the README (one text, two places), its links made relative
to docs/."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 - mkdocs' hook signature
    if page.file.src_uri != "index.md":
        return markdown
    text = README.read_text(encoding="utf-8")
    text = text.replace("[`docs/`](docs/)", "`docs/`")
    return re.sub(r"\]\(docs/", "](", text)
