"""What the network sees: feature maps of conv layers and Grad-CAM heatmaps, for one face.

- :func:`conv_layers` lists the conv and pool layers (nested models as "outer/inner");
  :func:`feature_maps` and :func:`feature_grid` show a layer's activations;
- :func:`grad_cam` (Grad-CAM or HiResCAM) and :func:`overlay` show where the evidence for a
  class lies. Sub-models are built once per (model, layer) and cached on the model object.

UI-free (numpy, TensorFlow/Keras, OpenCV). Works on keras.Model objects (functional or
Sequential, with one level of nested model).
"""

from __future__ import annotations

import threading

import numpy as np

from fer_core.errors import FerError
from fer_core.evaluation import model_batch
from fer_core.model import FerModel

CONV_TYPES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")
POOL_TYPES = ("MaxPooling2D", "AveragePooling2D")

_lock = threading.RLock()


def n_outputs(model) -> int:
    if isinstance(model, FerModel):
        return model.n_classes
    shape = model.outputs[0].shape if getattr(model, "outputs", None) else model.output_shape
    return int(shape[-1])


def _cache(model) -> dict:
    """Per-model cache (sub-models for feature maps and Grad-CAM) stored on the model object
    itself, so it goes away with the model; set with object.__setattr__ to bypass Keras'
    attribute tracking."""
    with _lock:
        c = model.__dict__.get("_fer_eval_cache")
        if c is None:
            c = {}
            object.__setattr__(model, "_fer_eval_cache", c)
        return c


def _is_container(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def conv_layers(model, include_pool: bool = True) -> list[str]:
    """Names of conv (and pool) layers in graph order; nested models as "outer/inner"."""
    kinds = CONV_TYPES + (POOL_TYPES if include_pool else ())
    out = []
    for layer in model.layers:
        if _is_container(layer):
            out += [f"{layer.name}/{n}" for n in conv_layers(layer, include_pool)
                    if "/" not in n]
        elif type(layer).__name__ in kinds:
            out.append(layer.name)
    return out


def _resolve(model, layer_name: str):
    """(container or None, layer) for "name" or "outer/inner"."""
    parts = layer_name.split("/")
    try:
        if len(parts) == 1:
            return None, model.get_layer(parts[0])
        if len(parts) == 2:
            outer = model.get_layer(parts[0])
            if _is_container(outer):
                return outer, outer.get_layer(parts[1])
    except ValueError:
        pass
    raise FerError(f"no layer {layer_name!r}; conv/pool layers: {conv_layers(model)}",
                   where="layer")


def _softmax_tail(model):
    """(tail, dense): the model's last layer when it is a softmax Dense or softmax Activation
    (else None), and that layer again when it is the Dense (else None)."""
    last = model.layers[-1]
    kind = type(last).__name__
    if getattr(getattr(last, "activation", None), "__name__", "") != "softmax" or \
            kind not in ("Dense", "Activation"):
        return None, None
    return last, (last if kind == "Dense" else None)


def _head(model):
    """(tensor, dense) where the class scores are computed: the logits before a final softmax
    (input of a softmax Dense, with that Dense returned; or input of a softmax Activation), so
    Grad-CAM is not flattened by saturated probabilities; else the model output."""
    tail, dense = _softmax_tail(model)
    return (model.outputs[0], None) if tail is None else (tail.input, dense)


def _activation_model(model, layer_name: str):
    """Cached callable x -> (activation, scores_source) and the final Dense (or None)."""
    import keras

    cache = _cache(model)
    with _lock:
        if ("layer", layer_name) in cache:
            return cache[("layer", layer_name)]
    container, layer = _resolve(model, layer_name)
    if isinstance(model, keras.Sequential):
        run, dense = _sequential_run(model, container, layer)
    else:
        run, dense = _functional_run(model, container, layer)
    with _lock:
        cache[("layer", layer_name)] = (run, dense)
    return run, dense


def _sequential_run(model, container, layer):
    """Grad-CAM callable for a ``keras.Sequential`` (``layer`` in it or in ``container``):
    the layers called in order. (A reloaded Sequential's symbolic ``layer.output`` is not
    connected to ``model.inputs``, so a sub-model cut from it has no gradient path; a
    functional model inside is connected within itself, so it is cut there.)"""
    import keras

    tail, dense = _softmax_tail(model)
    body = model.layers[:-1] if tail is not None else model.layers
    cut = None
    if container is not None and not isinstance(container, keras.Sequential):
        cut = keras.Model(container.inputs, [layer.output, container.outputs[0]])

    def run(x, layers=body):
        act = None
        for lyr in layers:
            if isinstance(lyr, keras.Sequential):
                inner, x = run(x, lyr.layers)
                act = act if inner is None else inner
            elif lyr is container:
                act, x = cut(x, training=False)
            else:
                x = lyr(x, training=False)
                act = x if lyr is layer else act
        return act, x
    return run, dense


def _functional_run(model, container, layer):
    """Grad-CAM callable for a functional model, ``layer`` possibly inside ``container``."""
    import keras

    head, dense = _head(model)
    inp = model.inputs[0]
    if container is None:
        sub = keras.Model(inp, [layer.output, head])

        def run(x):
            return sub(x, training=False)
    else:
        node = container._inbound_nodes[0]
        c_in, c_out = node.input_tensors[0], node.output_tensors[0]
        pre = None if c_in is inp else keras.Model(inp, c_in)
        mid = keras.Model(container.inputs[0], [layer.output, container.outputs[0]])
        post = None if c_out is head else keras.Model(c_out, head)

        def run(x):
            h = pre(x, training=False) if pre is not None else x
            a, o = mid(h, training=False)
            return a, (post(o, training=False) if post is not None else o)
    return run, dense


def _one(model, image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.shape != (48, 48):
        raise FerError(f"expected one face of shape (48, 48), got {image.shape}", where="image")
    return model_batch(model, image[None])


def feature_maps(model, image, layer_name: str) -> np.ndarray:
    """Activations float32 (H, W, C) of ``layer_name`` (see :func:`conv_layers`) for one face."""
    run, _ = _activation_model(model, layer_name)
    act, _ = run(_one(model, image))
    act = np.asarray(act, dtype=np.float32)[0]
    if act.ndim != 3:
        raise FerError(f"layer {layer_name!r} has no spatial output (shape {act.shape})",
                       where="layer")
    return act


def feature_grid(maps: np.ndarray, max_maps: int = 64, cell: int = 48, pad: int = 2) -> np.ndarray:
    """Tile the first ``max_maps`` channels of (H, W, C) activations into one uint8 grey image,
    each map scaled to its own 0..255 range and resized to ``cell`` pixels."""
    import cv2

    c = min(maps.shape[-1], max_maps)
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    grid = np.full((rows * (cell + pad) - pad, cols * (cell + pad) - pad), 255, np.uint8)
    for k in range(c):
        m = maps[..., k].astype(np.float32)
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        tile = cv2.resize((m * 255).astype(np.uint8), (cell, cell),
                          interpolation=cv2.INTER_NEAREST)
        r, q = divmod(k, cols)
        grid[r * (cell + pad):r * (cell + pad) + cell, q * (cell + pad):q * (cell + pad) + cell] = tile
    return grid


def last_conv_layer(model) -> str:
    """Default Grad-CAM layer: the last conv/pool layer (the last spatial feature map before
    global pooling or flattening)."""
    convs = conv_layers(model)
    if not convs:
        raise FerError("the model has no convolutional layer for Grad-CAM", where="model")
    return convs[-1]


def grad_cam(model, image, class_index: int, layer_name: str | None = None,
             method: str = "gradcam") -> np.ndarray:
    """Class activation heatmap float32 (48, 48) in [0, 1] for ``class_index``.

    ``layer_name`` defaults to the last conv/pool layer. Gradients are taken of the class logit
    when the model ends in a softmax. ``method``: "gradcam" (Selvaraju et al.: channels weighted
    by their spatially averaged gradient) or "hirescam" (Draelos & Carin: element-wise gradient
    x activation; identical to Grad-CAM on a layer that feeds global average pooling, and
    faithful for Flatten heads, where Grad-CAM's averaged weights often cancel to an empty map).
    An all-zero map means no positive evidence for the class at that layer.
    """
    import cv2
    import tensorflow as tf

    if method not in ("gradcam", "hirescam"):
        raise FerError(f"unknown method {method!r}; expected 'gradcam' or 'hirescam'",
                       where="method")
    n = n_outputs(model)
    if not 0 <= int(class_index) < n:
        raise FerError(f"class index {class_index} outside 0..{n - 1}", where="class")
    run, dense = _activation_model(model, layer_name or last_conv_layer(model))
    x = tf.convert_to_tensor(_one(model, image))
    with tf.GradientTape() as tape:
        tape.watch(x)
        act, h = run(x)
        if dense is not None:
            scores = tf.matmul(h, dense.kernel) + (dense.bias if dense.use_bias else 0.0)
        else:
            scores = h
        score = scores[:, int(class_index)]
    grads = tape.gradient(score, act)
    act, grads = np.asarray(act)[0], np.asarray(grads)[0]
    if act.ndim != 3:
        raise FerError("Grad-CAM needs a layer with spatial output", where="layer")
    if method == "gradcam":
        cam = (act * grads.mean(axis=(0, 1))).sum(axis=-1)
    else:
        cam = (act * grads).sum(axis=-1)
    cam = np.maximum(cam, 0).astype(np.float32)
    cam = cv2.resize(cam, (48, 48), interpolation=cv2.INTER_LINEAR)
    top = float(cam.max())
    return np.clip(cam / top, 0, 1).astype(np.float32) if top > 0 else np.zeros((48, 48), np.float32)


def overlay(image, heatmap, alpha: float = 0.45, size: int | None = None) -> np.ndarray:
    """Heatmap (jet) over the grey face: RGB uint8 (``size`` x ``size``, default 48)."""
    import cv2

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3:
        image = image[..., 0]
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)
    if heat.shape != image.shape:
        heat = cv2.resize(heat, image.shape[::-1])
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    out = cv2.cvtColor(cv2.addWeighted(colour, alpha, grey, 1 - alpha, 0), cv2.COLOR_BGR2RGB)
    if size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)
    return out
