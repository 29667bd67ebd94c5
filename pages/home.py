"""Home: what FER Studio does, what is active, and a link to every page."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

from pathlib import Path

import streamlit as st

from fer_core.resolve import configured_model
from fer_core.settings import get_settings
from ui.data import active_choice
from ui.text import md

ROOT = Path(__file__).resolve().parent.parent
LINKS = [  # (page file, label, icon, what it does)
    ("pages/explorer.py", "Dataset Explorer", "🗂️", "faces, class balance and data problems"),
    ("pages/train.py", "Train", "🏋️", "train a CNN and watch its curves grow live"),
    ("pages/evaluate.py", "Evaluate", "📊", "confusion matrix, per-class scores, failure cases"),
    ("pages/photo.py", "Photo", "🖼️", "find faces in a photo and read their emotions"),
    ("pages/webcam.py", "Webcam", "🎥", "live emotions from your webcam, in the browser"),
    ("pages/video.py", "Video", "🎞️", "emotions over time for every face in a video file"),
    ("pages/models.py", "Models", "📦", "every trained run: compare, rename, delete"),
]

st.title("😀 FER Studio")
st.markdown(
    "A workbench for **facial emotion recognition**: explore a FER dataset (FER2013, FER+, image "
    "folders or the built-in synthetic demo), train a Keras CNN and watch it learn, analyse where "
    "it fails, then use it on photos, video files, a live webcam or through the REST API "
    "(`python -m fer_core serve`).")

choice = active_choice()
c1, c2 = st.columns(2)
with c1.container(border=True):
    st.markdown("**Active dataset**")
    st.markdown(md(choice["name"]))
    if choice["source"] == "demo":
        st.caption("Synthetic demo: drawn faces, not real people. Pick FER2013 in the "
                   "Dataset Explorer for real data.")
with c2.container(border=True):
    st.markdown("**Active model**")
    model = st.session_state.get("active_model")
    default = None if model else configured_model()   # FER_MODEL, else the shipped model
    if model:
        st.markdown(f"`{Path(model).name}`")
        st.caption(md(model))
    elif default is not None:
        st.markdown(f"{'FER_MODEL' if get_settings().model else 'Shipped default'}: "
                    f"{md(default.name)}")
    else:
        st.markdown("None yet: train one on the Train page.")

st.subheader("Pages")
for path, label, icon, what in LINKS:
    if (ROOT / path).exists():
        st.page_link(path, label=f"{label}: {what}", icon=icon)
