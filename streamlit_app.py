"""FER Studio: the router. Each page lives in pages/; this file only lists them."""

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="FER Studio", page_icon="😀", layout="wide")

HERE = Path(__file__).resolve().parent
PAGES = [  # (file, title, icon); a page is listed once its file exists
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/explorer.py", "Dataset Explorer", ":material/dataset:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/photo.py", "Photo", ":material/photo_camera:"),
    ("pages/webcam.py", "Webcam", ":material/videocam:"),
    ("pages/video.py", "Video", ":material/movie:"),
    ("pages/models.py", "Models", ":material/inventory_2:"),
]

st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0))
               for i, (path, title, icon) in enumerate(PAGES) if (HERE / path).exists()]).run()
