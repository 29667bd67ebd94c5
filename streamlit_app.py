"""FER Studio: the router. Each page lives in pages/; this file only lists them.

Every page runs through this script, so it is where the process-wide import order is set:
pylibsrtp (the SRTP library under aiortc / streamlit-webrtc, used by the Webcam page) is
imported before any page can import TensorFlow. pylibsrtp's extension statically links OpenSSL
without hiding its symbols; once TensorFlow has loaded libtensorflow_framework.so (which exports
BoringSSL's CRYPTO_*/EVP_* symbols), loading pylibsrtp binds its OpenSSL calls to BoringSSL and
crashes the whole server (SIGSEGV). Loaded first, its symbols are bound to its own copy for
good. tests/test_import_order.py keeps this order.
"""

import pylibsrtp  # noqa: F401, I001 - first, before anything that may import TensorFlow

from pathlib import Path

import streamlit as st

from fer_core.errors import FerError
from fer_core.native_logs import quiet_tensorflow_startup
from fer_core.settings import get_settings

quiet_tensorflow_startup()  # the console shows no TensorFlow start-up lines

st.set_page_config(page_title="FER Studio", page_icon="😀", layout="wide")

try:  # every FER_* setting is checked before any page runs (fer_core.settings)
    get_settings()
except FerError as e:
    st.error("FER Studio cannot start: a setting is not valid. Fix it and restart the app.")
    st.code(str(e), language=None)  # shown literally: a value may hold Markdown
    st.stop()

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
