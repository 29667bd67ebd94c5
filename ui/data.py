"""Dataset choice shared by every page: the picker, cached loading and cached statistics.

The chosen dataset lives in ``st.session_state[ACTIVE]`` as a small dict (source, strict, name),
so switching pages never reloads anything: the data itself sits in ``st.cache_resource`` keyed by
the source and its file stamp, shared by all sessions (read-only by convention). Until the user
picks one, the active dataset is ``FER_DATA`` when set, else the synthetic demo.

Typed paths are confined to the allowed roots (:func:`check_typed_path`): data/, the upload
folder, the ``FER_DATA`` file and the folders listed in ``FER_DATA_ROOTS``. Every message that
holds user text (names, paths, loader errors) goes through :func:`ui.text.md`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from fer_core import DATA_DIR, atomic
from fer_core import data as fer_data
from fer_core.errors import FerError
from fer_core.settings import get_settings
from ui.text import md

ACTIVE = "active_dataset"
DEMO = {"source": "demo", "strict": True, "name": "Synthetic demo"}
DATA_SUFFIXES = (".csv", ".csv.gz", ".zip")
DEMO_LABEL = "Synthetic demo"
TYPED, UPLOAD = "Type a path…", "Upload a file…"


def upload_dir() -> Path:
    """Where uploaded dataset files are kept (``FER_UPLOAD_DIR``, see fer_core.settings)."""
    return get_settings().upload_dir


def max_upload_mb() -> int:
    """The upload limit (server.maxUploadSize in .streamlit/config.toml)."""
    return int(st.get_option("server.maxUploadSize"))


def data_files(folder: Path | None = None) -> list[Path]:
    """Datasets found in data/: FER CSV files (.csv/.csv.gz/.zip) and image folders."""
    folder = Path(folder or DATA_DIR)
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name == "demo":
            continue
        if (p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)) or p.is_dir():
            found.append(p)
    return found


def _stamp(source: str) -> tuple:
    """What makes a cached load stale: file size and modification time."""
    if source == "demo":
        return ("demo",)
    try:
        st_ = Path(source).expanduser().stat()
        return (st_.st_size, st_.st_mtime_ns)
    except OSError:
        return ("missing",)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_cached(source: str, strict: bool, stamp: tuple) -> fer_data.Dataset:
    return fer_data.load(source, strict=strict)


def load_dataset(source: str, strict: bool = True) -> fer_data.Dataset:
    """Load ``source`` once per server (FerError on bad data; errors are not cached)."""
    return _load_cached(str(source), bool(strict), _stamp(str(source)))


@st.cache_data(show_spinner=False, max_entries=4)
def _stats_cached(source: str, strict: bool, stamp: tuple, _ds) -> dict:
    from fer_core.data import stats
    return {"mean_faces": stats.mean_faces(_ds), "histograms": stats.histograms(_ds),
            "flagged": stats.flagged(_ds)}


def dataset_stats(choice: dict, ds) -> dict:
    """Mean faces, intensity histograms and flagged images (fer_core.data.stats), cached."""
    return _stats_cached(choice["source"], choice["strict"], _stamp(choice["source"]), ds)


def default_choice() -> dict:
    """The dataset named at start-up (``FER_DATA``), else the synthetic demo."""
    env = get_settings().data
    if env:
        return {"source": env, "strict": True, "name": f"FER_DATA: {env}"}
    return DEMO


def active_choice() -> dict:
    """The session's chosen dataset (:func:`default_choice` until the user picks another)."""
    return st.session_state.get(ACTIVE) or default_choice()


def allowed_roots() -> list[Path]:
    """Folders a typed path may point into: data/, uploads and ``FER_DATA_ROOTS`` entries
    (separated by ``os.pathsep``)."""
    extra = get_settings().data_roots
    return [Path(os.path.abspath(os.path.expanduser(p))) for p in
            [DATA_DIR, upload_dir(), *extra]]


def check_typed_path(text: str) -> str:
    """``text`` if it names the FER_DATA file or something under an allowed root (the path is
    normalised first, so ``..`` cannot climb out), else FerError."""
    path = Path(os.path.abspath(os.path.expanduser(text)))
    env = get_settings().data
    roots = allowed_roots()
    if env:
        env_path = Path(os.path.abspath(os.path.expanduser(env)))
        if path == env_path:
            return text
        if env_path.is_dir():
            roots.append(env_path)
    if any(path == r or r in path.parents for r in roots):
        return text
    raise FerError("this path is not allowed: typed paths must be inside data/, the upload "
                   "folder or a folder listed in the FER_DATA_ROOTS setting (or be the FER_DATA "
                   "file)", where=text)


def set_active(source: str, strict: bool, name: str) -> None:
    st.session_state[ACTIVE] = {"source": str(source), "strict": bool(strict), "name": name}


def get_active_dataset(show_errors: bool = True):
    """The active Dataset (loaded from cache), or None after showing the load error."""
    choice = active_choice()
    try:
        with st.spinner(f"Loading {choice['name']}…"):
            return load_dataset(choice["source"], choice["strict"])
    except FerError as exc:
        if show_errors:
            st.error(f"Could not load {md(choice['name'])}: {md(exc)}")
        return None


def dataset_label(ds) -> str:
    """How a dataset is named on every page ('Synthetic demo' is always said), as Markdown
    with the source escaped."""
    if ds is None:
        return "none"
    name = "Synthetic demo (drawn faces, not real people)" if ds.synthetic else md(ds.source)
    return f"{name} · {len(ds):,} faces · {ds.label_set}"


def save_upload(name: str, data: bytes) -> Path:
    """Write uploaded bytes to a temp file named by content (atomic) and return its path."""
    lower = name.lower()
    suffix = next((s for s in (".csv.gz", ".csv", ".zip") if lower.endswith(s)), None)
    if suffix is None:
        raise FerError("expected a .csv, .csv.gz or .zip file", where=name)
    limit = max_upload_mb()
    if len(data) > limit * 1024 * 1024:
        raise FerError(f"file is {len(data) / 2**20:.0f} MB; the upload limit is {limit} MB "
                       "(put larger files in data/ or set FER_DATA)", where=name)
    folder = upload_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        atomic.write_bytes(path, data)
    return path


def _options() -> dict[str, str | None]:
    """Picker label -> source (None: asks for more input)."""
    opts: dict[str, str | None] = {DEMO_LABEL: "demo"}
    for p in data_files():
        opts[f"data/{p.name}"] = str(p)
    env = get_settings().data
    if env:
        opts[f"FER_DATA: {env}"] = env
    opts[TYPED] = None
    opts[UPLOAD] = None
    return opts


def dataset_picker():
    """Widgets choosing the dataset; sets the active one and returns (Dataset|None, choice).

    Bad data shows ``st.error`` with the loader's message and returns None, so the page stays
    usable.
    """
    current = active_choice()
    opts = _options()
    labels = list(opts)
    default = next((i for i, k in enumerate(labels) if opts[k] == current["source"]), None)
    if default is None:
        default = labels.index(UPLOAD if current["source"].startswith(str(upload_dir()))
                               else TYPED)
    c1, c2 = st.columns([3, 1])
    label = c1.selectbox("Dataset", labels, index=default, key="ds_pick")
    skip = c2.checkbox("Skip bad rows", value=not current["strict"], key="ds_skip",
                       help="Load what is valid and report the rows left out "
                            "(otherwise the first bad row stops the load).")
    source, name = opts[label], label
    if label == TYPED:
        typed = st.text_input("Path to a FER2013 CSV (.csv/.csv.gz/.zip) or an image folder",
                              value="" if current["source"] == "demo" else current["source"],
                              key="ds_path")
        source, name = typed.strip() or None, typed.strip()
        if source is not None:
            try:
                check_typed_path(source)
            except FerError as exc:
                st.error(md(exc))
                return None, {"source": source, "strict": not skip, "name": name}
    elif label == UPLOAD:
        up = st.file_uploader(f"FER2013 CSV (.csv, .csv.gz or .zip, up to {max_upload_mb()} MB)",
                              type=["csv", "gz", "zip"], key="ds_upload")
        source = None
        if up is not None:
            try:
                source, name = str(save_upload(up.name, up.getvalue())), f"upload: {up.name}"
            except FerError as exc:
                st.error(md(exc))
    if source is None:
        if label in (TYPED, UPLOAD) and current["source"] != "demo":
            source, name = current["source"], current["name"]  # keep the last good choice
        else:
            st.info("Choose a file to load; the synthetic demo stays active meanwhile.")
            return get_active_dataset(), active_choice()
    try:
        with st.spinner(f"Loading {name}…"):
            ds = load_dataset(source, strict=not skip)
    except FerError as exc:
        st.error(f"Could not load {md(name)}: {md(exc)}")
        return None, {"source": source, "strict": not skip, "name": name}
    set_active(source, not skip, name)
    return ds, active_choice()
