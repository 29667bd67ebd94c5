"""Streamlit-only helpers shared by the pages (cached resources, pickers, live charts).

Imports flow pages -> ui -> fer_core; fer_core never imports this package.
"""

import streamlit as st

try:  # Streamlit internals: see _use_the_router below
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:  # pragma: no cover - other Streamlit versions
    PagesManager = None


def _use_the_router() -> None:
    """Make the very first run of a fresh server go through streamlit_app.py.

    Because the repo has a ``pages/`` folder, Streamlit starts in its legacy multipage mode and,
    until some session has run the router (``st.navigation`` switches the mode off for the
    process), a deep link such as ``/explorer`` would run the page file alone: no page config,
    no navigation. Switching the mode off and rerunning sends that first run through the router.
    """
    if PagesManager is not None and PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_use_the_router()
