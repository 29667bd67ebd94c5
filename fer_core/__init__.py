"""FER Studio core: data, models, training, evaluation, vision, prediction and the REST API.

UI-free: never imports streamlit or streamlit_webrtc. PyAV (``av``) is imported only inside
``fer_core.video``'s functions, to read and write video files.
"""

from fer_core.errors import FerError
from fer_core.paths import DATA_DIR, DEFAULT_MODEL, MODELS_DIR, ROOT
from fer_core.settings import apply_env_defaults

__version__ = "0.1.0"


apply_env_defaults()  # TF_CPP_MIN_LOG_LEVEL, KERAS_BACKEND: once, before anything imports TF

__all__ = ["FerError", "ROOT", "DATA_DIR", "MODELS_DIR", "DEFAULT_MODEL", "__version__"]
