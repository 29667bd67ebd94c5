"""REST API (FastAPI): ``create_app(settings)``; see :mod:`fer_core.api.app`."""

from fer_core.settings import Settings


def create_app(settings: Settings | None = None):
    from fer_core.api.app import create_app as _create
    return _create(settings)


__all__ = ["Settings", "create_app"]
