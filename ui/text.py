"""User text (file names, typed paths, CSV headers, error messages) inside Streamlit Markdown.

Streamlit renders ``st.error``/``st.info``/``st.caption``/``st.markdown`` text as Markdown, so a
file name like ``[x](http://host/a) ![i](http://host/p.png)`` would become a link and an image
the browser fetches. :func:`md` backslash-escapes every ASCII punctuation character (CommonMark
allows that for all of them), which leaves the text readable and inert: no links, images,
emphasis, code, headings, HTML, LaTeX (``$``) or autolinked URLs (``http\\://``, ``www\\.``).
"""

from __future__ import annotations

import re

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def md(text) -> str:
    """``text`` escaped for Streamlit Markdown (shows literally)."""
    return _PUNCT.sub(r"\\\1", str(text))
