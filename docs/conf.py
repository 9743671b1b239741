"""Sphinx configuration: the user guide (Markdown, through MyST) and the API
reference (autodoc from the docstrings).  Built by CI with warnings as
errors: `python -m sphinx -W --keep-going -b html docs docs/_build/html`."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "ebpf for Python"
author = "the ebpf for Python developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
# The library loads libbpf lazily; importing for autodoc needs none of it.
nitpicky = False
