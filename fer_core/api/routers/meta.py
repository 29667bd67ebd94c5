"""GET /v1/health, /v1/models, /v1/labels."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from fer_core import __version__, resolve, runs
from fer_core.api.deps import ServiceDep, SettingsDep, StoreState, StoreStateDep
from fer_core.api.schemas import Health, LabelsResponse, ModelsResponse
from fer_core.errors import FerError
from fer_core.labels import EMOJI, LABEL_SETS
from fer_core.model_files import read_labels
from fer_core.settings import Settings
from fer_core.vision import DetectorConfig

router = APIRouter(tags=["meta"])


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_VERSIONS = None


def versions() -> dict:
    global _VERSIONS
    if _VERSIONS is None:
        _VERSIONS = {"fer_studio": __version__, "python": platform.python_version(),
                     "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
                     "keras": _version("keras"),
                     "opencv": _version("opencv-python-headless") or _version("opencv-python"),
                     "fastapi": _version("fastapi")}
    return _VERSIONS


async def feedback_store_health(state: StoreState, settings: Settings) -> dict:
    """Kind of the feedback store and whether it answers now (no location, no credentials)."""
    store = state.store
    if store is None:
        from fer_core.store_url import store_url
        try:
            kind = store_url(settings.feedback_db).get_backend_name()
        except FerError:
            kind = "unknown"
        return {"kind": kind, "reachable": False}
    return {"kind": store.kind, "reachable": await run_in_threadpool(store.ping)}


@router.get("/health", response_model=Health, summary="Is a model loaded; versions")
async def health(service: ServiceDep, settings: SettingsDep, store_state: StoreStateDep):
    b = service.batcher
    return {"status": "ok" if service.loaded else "degraded", "model_loaded": service.loaded,
            "model_id": service.model_id, "model_error": service.public_error,
            "labels": service.labels if service.loaded else None, "versions": versions(),
            "detector": DetectorConfig.of(service.settings).kind, "tta": service.settings.tta,
            "batches": b.calls if b else 0, "batched_faces": b.faces if b else 0,
            "feedback_store": await feedback_store_health(store_state, settings)}


def _labels_of(path: Path) -> list[str] | None:
    try:
        names, _ = read_labels(path)
    except FerError:
        return None
    return list(names) if names else None


def available_models(active: Path | None) -> list[dict]:
    """The active model, the shipped default and the training runs that hold a model."""
    paths = [r.path for r in runs.list_runs() if r.has_model]
    for extra in (resolve.DEFAULT_MODEL, active):
        if extra is not None and runs.has_model(extra) and \
                extra.resolve() not in {p.resolve() for p in paths}:
            paths.insert(0, extra)
    act = active.resolve() if active is not None and active.exists() else None
    # ids and names only: the server's folders are none of the client's business
    return [{"id": p.stem if p.suffix == ".keras" else p.name, "name": p.name,
             "kind": "default" if p.resolve() == resolve.DEFAULT_MODEL.resolve() else "run",
             "active": p.resolve() == act, "labels": _labels_of(p)} for p in paths]


@router.get("/models", response_model=ModelsResponse, summary="Available models; the active one")
async def models(service: ServiceDep):
    promoted = service.loaded and service.source == "promoted"
    active = service.configured_path if service.loaded and not promoted else None
    listed = await run_in_threadpool(available_models, active)
    if promoted:
        listed.insert(0, {"id": service.model_id, "name": service.model_id, "kind": "promoted",
                          "active": True, "labels": service.labels})
    for m in listed:
        if m["active"]:
            m["sha256"] = service.model_sha256
    return {"models": listed,
            "active": {"model_id": service.model_id, "sha256": service.model_sha256,
                       "source": service.source if service.loaded else None,
                       "pointer_version": service.pointer_version}}


@router.get("/labels", response_model=LabelsResponse, summary="The active model's labels")
async def labels(service: ServiceDep):
    names = service.labels
    label_set = next((k for k, v in LABEL_SETS.items() if list(v) == names), None)
    from fer_core.labels import canonical
    emoji = {}
    for n in names:
        try:
            emoji[n] = EMOJI.get(canonical(n), "")
        except Exception:  # noqa: BLE001
            emoji[n] = ""
    return {"labels": names, "label_set": label_set, "emoji": emoji}
