"""Request and response bodies (pydantic v2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PredictJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_base64: str = Field(..., description="the image file (jpg/png/webp/bmp), base64-encoded;"
                              " a data: URL prefix is accepted")


class BatchJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images_base64: list[str] = Field(..., min_length=1, max_length=64,
                                     description="images, base64-encoded")


class Face(BaseModel):
    box: list[int] = Field(..., description="[x, y, w, h] in image pixels")
    emotion: str
    scores: dict[str, float]
    top_k: list[tuple[str, float]] = Field(..., description="[label, probability], best first")
    prediction_id: str = Field(..., description="send it back to /v1/feedback to correct it")


class PredictResponse(BaseModel):
    faces: list[Face]
    model_id: str
    model_sha256: str | None = Field(None, description="sha256 of the model file that answered")
    timing_ms: float


class BatchItem(BaseModel):
    index: int
    ok: bool
    faces: list[Face] = []
    error: str | None = None
    detail: str | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model_id: str
    model_sha256: str | None = Field(None, description="sha256 of the model file that answered")
    timing_ms: float


class FeedbackJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(..., min_length=1, max_length=32, description="the true emotion")
    prediction_id: str | None = Field(None, max_length=64,
                                      description="id of a face from /v1/predict")
    image_base64: str | None = Field(None, description="or the image itself, base64-encoded")
    detect: bool = Field(True, description="with an image: false = it is already a face crop")
    note: str | None = Field(None, max_length=2000)


class FeedbackResponse(BaseModel):
    id: int
    label: str
    prediction_id: str | None = None
    predicted: str | None = None
    stored: int = Field(..., description="feedback rows stored so far")


class Versions(BaseModel):
    fer_studio: str
    python: str
    tensorflow: str | None = None
    keras: str | None = None
    opencv: str | None = None
    fastapi: str | None = None


class FeedbackStoreHealth(BaseModel):
    kind: str = Field(..., description="'sqlite' or 'postgresql'")
    reachable: bool = Field(..., description="the feedback database answers now")


class Health(BaseModel):
    status: str
    model_loaded: bool
    model_id: str | None = None
    model_error: str | None = None
    labels: list[str] | None = None
    detector: str
    tta: bool = Field(False, description="faces are averaged with their mirror image (FER_TTA)")
    versions: Versions
    batches: int
    batched_faces: int
    feedback_store: FeedbackStoreHealth | None = None


class ModelInfo(BaseModel):
    id: str
    name: str = Field(..., description="the run folder or .keras file name (no server path)")
    kind: str = Field(..., description="'default' (shipped), 'run' or 'promoted'")
    active: bool
    labels: list[str] | None = None
    sha256: str | None = Field(None, description="of the model file (the active model only)")


class ActiveModel(BaseModel):
    model_id: str | None = None
    sha256: str | None = None
    source: str | None = Field(None, description="'configured' (FER_MODEL) or 'promoted' "
                                                 "(the store's active-model pointer)")
    pointer_version: int = 0


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    active: ActiveModel | None = None


class LabelsResponse(BaseModel):
    labels: list[str]
    label_set: str | None = None
    emoji: dict[str, str]
