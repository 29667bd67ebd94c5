"""The one exception type for errors a user can cause.

Every message names the thing that was wrong (file, row, field, image path) and what was
expected. The Streamlit app shows it, the CLI prints it and exits 2, the API answers 4xx JSON.
"""

from __future__ import annotations


class FerError(ValueError):
    """A user-caused error: bad file, bad row, bad image, bad model file or bad setting.

    ``where`` optionally names the file/row/field; ``status`` is the HTTP status the API maps it to.
    """

    def __init__(self, message: str, *, where: str | None = None, status: int = 400):
        self.where = where
        self.status = status
        super().__init__(f"{where}: {message}" if where else message)
