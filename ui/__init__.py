"""Streamlit-only helpers shared by the pages (cached resources, pickers, live charts).

Imports flow pages -> ui -> fer_core; fer_core never imports this package.
"""
