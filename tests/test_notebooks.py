"""Every notebook runs top to bottom, headless, on the tiny models (its first cell's defaults).

Executed with nbclient in a fresh kernel of *this* interpreter: the kernelspec "python3" that
ipykernel ships inside the environment launches `python -m ipykernel_launcher`, and jupyter_client
replaces a bare `python` with `sys.executable`, so no global kernel install is needed. The working
directory is notebooks/ (they import `_support` from there). Outputs are never written back: the
committed notebooks stay stripped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["talker_parity", "codec_parity", "generation", "finetune"]

pytestmark = pytest.mark.reference  # the parity notebooks compare against the official classes


def test_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_notebook_runs(name):
    import nbformat
    from nbclient import NotebookClient

    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), (
        f"{path.name}: committed with outputs (strip them)"
    )
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors, errors
    print(f"[notebook] {name}: ran in {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("name", NAMES)
def test_published_page_is_fresh(name):
    """`docs/notebooks/<name>.md` (the executed page readers see on the web) was rendered from
    the current notebook source; regenerate with `.venv/bin/python notebooks/render.py`."""
    sys.path.insert(0, str(NOTEBOOKS))
    import render

    page = render.OUT / f"{name}.md"
    assert render.page_hash(page) == render.source_hash(NOTEBOOKS / f"{name}.ipynb"), (
        f"{page} is missing or stale: run `.venv/bin/python notebooks/render.py {name}`"
    )
    images = list((render.OUT / f"{name}_files").glob("*.png"))
    assert images and all(f"{name}_files/{p.name}" in page.read_text(encoding="utf-8") for p in images), (
        f"{page}: its plots are missing"
    )
