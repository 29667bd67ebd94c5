"""Streamlit-only helpers shared by the pages (cached resources, pickers, live charts).

Imports flow pages -> ui -> fer_core; fer_core never imports this package.

Every page imports this package first. On a fresh server a deep link (``/train``) runs the page
file alone, before the router has ever run; importing ``ui`` first sends that run through the
router (:func:`_use_the_router`) before the page imports anything that loads TensorFlow, and
imports pylibsrtp here as well, so that it is loaded before TensorFlow however a run starts
(see streamlit_app.py: loaded after TensorFlow, pylibsrtp crashes the process).
"""

import pylibsrtp  # noqa: F401, I001 - before anything that may import TensorFlow

import streamlit as st

try:  # Streamlit internals: see _use_the_router and _keep_keras_state below
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner as _script_runner
except ImportError:  # pragma: no cover - other Streamlit versions
    PagesManager = _script_runner = None


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


def _close_matplotlib_figures() -> None:
    import sys
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


def _keep_keras_state() -> None:
    """Stop Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Keras 3's clear_session replaces its thread-local state objects for *all* threads, so a
    rerun of any session (the Train page reruns every second) would wipe the layer-name
    counters, seed generator and dtype policy of a model being built in another session's
    thread ("The name 'conv2d' is used 2 times in the model"). The app keeps long-lived models
    on purpose (cached predictors), so the reset is unwanted.
    """
    if _script_runner is not None and hasattr(_script_runner, "_clean_problem_modules"):
        _script_runner._clean_problem_modules = _close_matplotlib_figures


_keep_keras_state()
_use_the_router()
