"""The API's settings are the one :class:`fer_core.settings.Settings` (every ``FER_*``
variable, validated once; see that module). This name is kept so that existing imports
(``from fer_core.api.settings import Settings``) go on working."""

from fer_core.settings import Settings

__all__ = ["Settings"]
