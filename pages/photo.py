"""Photo: find every face in a photo and read its emotion (boxes or the mememoji overlay)."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import pandas as pd
import streamlit as st

from fer_core.errors import FerError
from fer_core.photo import MAX_PHOTO_MB, analyse_photo, photo_rows
from ui.figures import prob_bars
from ui.models import detector_settings, get_predictor, model_picker
from ui.text import md

st.title("🖼️ Photo")
st.caption("Upload photos or take a snapshot: every face is boxed and labelled. "
           "Photos are processed in memory and never stored.")

c1, c2 = st.columns([3, 2])
model_path = model_picker("Model", key="photo_model", container=c1)
mode = c2.radio("Overlay", ["box", "emoji"], horizontal=True, key="photo_mode",
                format_func={"box": "Boxes and labels", "emoji": "Emoji (mememoji)"}.get)
settings = detector_settings("photo_det", preset="photo")
if model_path is None:
    st.stop()
try:
    predictor = get_predictor(model_path, settings)
except FerError as exc:
    st.error(f"Cannot use this model: {md(exc)}")
    st.stop()
tta = st.toggle("Mirror averaging (TTA)", value=predictor.tta, key="photo_tta",
                help="Classify each face together with its mirror image and average the two "
                     "(twice the classification time). Off by default where it does not make "
                     "this model measurably more accurate (see its model card).")

up_tab, cam_tab = st.tabs(["Upload", "Camera snapshot"])
with up_tab:
    uploads = st.file_uploader(f"Photos (JPG, PNG or WebP, up to {MAX_PHOTO_MB} MB each)",
                               type=["jpg", "jpeg", "png", "webp"], accept_multiple_files=True,
                               key="photo_upload")
with cam_tab:
    snap = st.camera_input("Take a snapshot", key="photo_camera")
files = list(uploads or []) + ([snap] if snap is not None else [])
if not files:
    st.info("Upload a photo or take a snapshot to start.")
    st.stop()

results = []
for f in files:
    name = getattr(f, "name", None) or "snapshot.jpg"
    try:
        res = analyse_photo(name, f.getvalue(), predictor, mode, tta=tta)
    except FerError as exc:
        st.error(f"Cannot read {md(name)}: {md(exc)}")
        continue
    results.append(res)
    st.subheader(name)
    left, right = st.columns([3, 2])
    left.image(res.annotated, channels="BGR", width="stretch")
    left.download_button("Download annotated image", res.png(),
                         f"{name.rsplit('.', 1)[0]}-annotated.png", "image/png",
                         key=f"dl_{name}_{len(results)}")
    with right:
        if not res.faces:
            st.warning(f"No face found in {md(name)}. Try a larger, frontal, well-lit face, or "
                       "lower 'Min neighbours' / 'Min face size' in the detector settings.")
        else:
            st.markdown(f"**{len(res.faces)} face{'s' if len(res.faces) > 1 else ''} found**")
        for i, face in enumerate(res.faces, 1):
            st.plotly_chart(prob_bars(face.scores, title=f"Face {i}: {face.emotion} "
                                                         f"({face.confidence:.0%})"),
                            key=f"bars_{len(results)}_{i}", config={"displayModeBar": False})

rows = photo_rows(results)
if rows:
    st.subheader("All faces")
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True)
    st.download_button("Download results (CSV)", table.to_csv(index=False), "faces.csv",
                       "text/csv", key="photo_csv")
