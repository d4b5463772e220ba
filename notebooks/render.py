"""Execute every notebook headless and publish it as Markdown with its outputs and its plots as
PNG files, so a reader on the web (any forge renders Markdown and images) sees the comparisons
without running anything:

    .venv/bin/python notebooks/render.py            # all → docs/notebooks/<name>.md + <name>_files/*.png
    .venv/bin/python notebooks/render.py generation # one

The committed `.ipynb` files stay stripped; the pages are the executed copies. Each page carries
the SHA-256 of its notebook's source cells (an HTML comment on its first line);
`tests/test_notebooks.py` fails when a notebook changed and its page was not regenerated.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "notebooks"
NAMES = ["talker_parity", "codec_parity", "generation", "finetune"]
STAMP = "notebook-source-sha256"


def source_hash(path: Path) -> str:
    """SHA-256 over the notebook's cell types and sources (outputs and metadata excluded)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    h = hashlib.sha256()
    for cell in nb.cells:
        h.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0")
    return h.hexdigest()


def page_hash(page: Path) -> str | None:
    """The source hash a published page was rendered from (None if absent)."""
    if not page.is_file():
        return None
    first = page.read_text(encoding="utf-8").split("\n", 1)[0]
    prefix = f"<!-- {STAMP}: "
    return first[len(prefix) : -len(" -->")] if first.startswith(prefix) else None


def render(name: str) -> Path:
    import shutil

    import nbformat
    from nbclient import NotebookClient
    from nbconvert import MarkdownExporter

    path = HERE / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    body, resources = MarkdownExporter().from_notebook_node(nb, resources={"output_files_dir": f"{name}_files"})
    OUT.mkdir(parents=True, exist_ok=True)
    files = OUT / f"{name}_files"
    shutil.rmtree(files, ignore_errors=True)
    for rel, data in resources.get("outputs", {}).items():
        (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
        (OUT / rel).write_bytes(data)
    page = OUT / f"{name}.md"
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(f"<!-- {STAMP}: {source_hash(path)} -->\n" + body, encoding="utf-8")
    tmp.replace(page)
    return page


if __name__ == "__main__":
    for n in sys.argv[1:] or NAMES:
        if n not in NAMES:
            raise SystemExit(f"unknown notebook {n!r}; one of {NAMES}")
        print(f"rendered {render(n)}")
