"""The one Keras -> TFLite converter (TensorFlow imported inside): used by
:mod:`fer_core.export` and, for a run without an exported ``model.tflite``, by
:class:`fer_core.model.FerModel` at load time."""

from __future__ import annotations

import tempfile

import numpy as np


def input_signature():
    import keras
    return [keras.InputSpec(shape=(None, 48, 48, 1), dtype="float32")]


def four_d(model):
    """``model`` itself when it takes (N, 48, 48, 1), else a wrapper that does."""
    if len(model.inputs[0].shape) == 4:
        return model
    import keras
    inp = keras.Input((48, 48, 1), name="face")
    return keras.Model(inp, model(keras.layers.Reshape((48, 48))(inp)), name=model.name)


def tflite_bytes(model, int8_faces: np.ndarray | None = None) -> bytes:
    """A TFLite flatbuffer of ``model`` (the one converter: also used at load time by
    :class:`fer_core.model.FerModel` for runs without an exported file). ``int8_faces``:
    uint8 faces to calibrate full-integer quantisation (float input and output kept)."""
    import tensorflow as tf
    with tempfile.TemporaryDirectory(prefix="fer-export-") as d:
        four_d(model).export(d, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        if int8_faces is not None:
            faces = np.asarray(int8_faces, np.float32).reshape(-1, 1, 48, 48, 1)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x] for x in faces)
        return conv.convert()
