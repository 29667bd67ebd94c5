"""FER Studio core: data, models, training, evaluation, vision, prediction and the REST API.

The Python API (see README, "Use it as a library")::

    import fer_core
    model = fer_core.load_model()                  # the shipped model (or a run dir / .keras)
    faces = model.predict("photo.jpg")             # [Face(box, emotion, probabilities)]
    result = model.video("clip.mp4")               # result.frames (DataFrame), result.summary
    report = model.evaluate("demo")                # needs fer-studio[train]
    model = fer_core.train("demo", out="runs/r1", epochs=2)   # needs fer-studio[train]

Its names load lazily, so ``import fer_core`` stays light (no TensorFlow, no OpenCV).
UI-free: never imports streamlit or streamlit_webrtc. PyAV (``av``) is imported only inside
``fer_core.video``'s functions, to read and write video files.
"""

from fer_core.errors import FerError
from fer_core.paths import DATA_DIR, DEFAULT_MODEL, MODELS_DIR, PACKAGE_DIR, ROOT
from fer_core.settings import apply_env_defaults

__version__ = "0.1.0"


apply_env_defaults()  # TF_CPP_MIN_LOG_LEVEL, KERAS_BACKEND: once, before anything imports TF

_API = ("Model", "Face", "VideoResult", "load_model", "train")

__all__ = ["FerError", "load_model", "train", "Model", "Face", "VideoResult",
           "ROOT", "PACKAGE_DIR", "DATA_DIR", "MODELS_DIR", "DEFAULT_MODEL", "__version__"]


def __getattr__(name):
    if name in _API:
        from fer_core import library
        return getattr(library, name)
    raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
