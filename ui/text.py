"""User text (file names, typed paths, CSV headers, error messages) inside Streamlit Markdown.

Streamlit renders ``st.error``/``st.info``/``st.caption``/``st.markdown`` text as Markdown, so a
file name like ``[x](http://host/a) ![i](http://host/p.png)`` would become a link and an image
the browser fetches. :func:`md` backslash-escapes every ASCII punctuation character (CommonMark
allows that for all of them): no links, images, emphasis, code, headings, tables or LaTeX (``$``).
Bare addresses (``http://``, ``www.``, ``a@b.c``) are turned into links after escapes are
resolved (GFM autolink literals), so an invisible word joiner (U+2060) goes after the scheme or
``www`` and before ``@``: the text reads the same and is never a link.
"""

from __future__ import annotations

import re

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_AUTOLINK = re.compile(r"(?i)(https?|ftp|www)(?=\\[:.])")
JOINER = "\u2060"


def md(text) -> str:
    """``text`` escaped for Streamlit Markdown (shows literally, never as a link or image)."""
    escaped = _PUNCT.sub(r"\\\1", str(text))
    return _AUTOLINK.sub(r"\1" + JOINER, escaped).replace("\\@", JOINER + "\\@")
