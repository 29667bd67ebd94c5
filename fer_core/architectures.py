"""Architecture registry: ``name -> builder(input_shape, n_classes, **params) -> keras.Model``.

Every builder is pure (no global state, nothing trained) and returns a functional Keras 3 model
that takes raw uint8-valued grey faces ``(48, 48, 1)`` (a float32 cast is fine) and rescales them
*inside* the model, so every entry point (app, CLI, API, webcam) preprocesses identically. Models
use only built-in Keras layers, so ``keras.saving.load_model(path, safe_mode=True)`` loads them
without registering anything.

FLOPs are computed analytically by :func:`count_flops` from the built layers: a multiply-add
counts as 2 FLOPs; convolutions (regular, depthwise, separable) and dense layers are counted,
batch-norm, activations, pooling and additions are ignored (< 2 % for these nets). Figures are
per image, forward pass; one training step costs about 3x that.

=================  =========  ============  =============================================
name               params     MFLOPs/image  use
=================  =========  ============  =============================================
``vgg``            0.073 M    43            fast default (conv-BN-ReLU, global pooling)
``mini_xception``  0.058 M    11            tiny (Arriaga et al. 2017, the ``fer`` model)
``resnet``         1.56 M     256           accuracy (basic residual blocks, width 24)
``mememoji``       3.1 M      304           the classic FER2013 Keras design (baseline)
=================  =========  ============  =============================================

(Run ``python -m fer_core bench train --all`` for exact figures and speed on this machine.)

Importing this module does not import Keras: the names, parameters and defaults are read
without TensorFlow (the Train page, ``train``'s checks of its settings); the builders import it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from fer_core.errors import FerError

if TYPE_CHECKING:
    import keras

INPUT_SHAPE = (48, 48, 1)
DEFAULT_ARCH = "vgg"


def _inputs(input_shape):
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(input_shape), name="face")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    return inp, x


def _head(x, n_classes, dropout, name="predictions"):
    from keras import layers

    if dropout:
        x = layers.Dropout(dropout)(x)
    return layers.Dense(n_classes, activation="softmax", name=name, dtype="float32")(x)


def _conv_bn_relu(x, filters, kernel=3, strides=1, bn_momentum=0.99):
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    return layers.ReLU()(x)


def _projection(x, filters, strides=1):
    """A 1x1 projection shortcut: every ``strides``-th pixel, then a bias-free 1x1 conv.

    The same function as a strided 1x1 conv (same weights), but its training never runs
    oneDNN's strided 1x1 backward pass, which corrupts memory on AVX-512 CPUs when the input
    has fewer than 16 channels and the batch size is odd (oneDNN issue 6035; it killed the
    app server on a last partial batch)."""
    from keras import layers

    if strides != 1:
        x = layers.MaxPooling2D(1, strides=strides, padding="same")(x)
    return layers.Conv2D(filters, 1, use_bias=False)(x)


def mememoji(input_shape=INPUT_SHAPE, n_classes=7, width=32, dense=512, dropout=0.5):
    """The classic FER2013 Keras design ("mememoji"): nine 3x3 convolutions (32, 64, 128
    filters, three of each) with max-pooling after every three, then two dense layers with
    dropout and a softmax (``width`` scales the filters: 32, 64, 128). No batch-norm, and the
    flattened features keep where things are in the face. Defaults (width=32, dense=512):
    ~3.1 M params, ~304 MFLOPs per image."""
    import keras
    from keras import layers

    inp, x = _inputs(input_shape)
    for filters in (width, width * 2, width * 4):
        for _ in range(3):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dense(dense, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name="mememoji")


def vgg(input_shape=INPUT_SHAPE, n_classes=7, width=16, depth=2, stages=3, dropout=0.2,
        bn_momentum=0.99):
    """Fast default: ``stages`` blocks of ``depth`` conv-BN-ReLU layers (3x3), each block
    followed by 2x2 max-pooling and doubling the width (``width``, 2x, 4x ...), then global
    average pooling, dropout and softmax. With width=16, depth=2, stages=3: ~0.07 M params,
    ~43 MFLOPs per image (2/3 of it in the 48x48 and 24x24 blocks); width=32: ~0.29 M params,
    ~171 MFLOPs."""
    import keras
    from keras import layers

    inp, x = _inputs(input_shape)
    for s in range(stages):
        for _ in range(depth):
            x = _conv_bn_relu(x, width * 2 ** s, bn_momentum=bn_momentum)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = _head(x, n_classes, dropout)
    return keras.Model(inp, out, name="vgg")


def mini_xception(input_shape=INPUT_SHAPE, n_classes=7, width=8, modules=4, dropout=0.0,
                  l2=0.0, bn_momentum=0.99):
    """mini-Xception (Arriaga et al. 2017, the ``fer``/``face_classification`` model): two
    plain 3x3 convs of ``width`` filters, then ``modules`` residual modules of two depthwise-
    separable 3x3 convs with max-pooling and a strided 1x1 shortcut (filters 2*width, 4*width,
    ...), a 3x3 conv to ``n_classes`` maps and global average pooling. ~0.06 M params,
    ~11 MFLOPs per image with the defaults (the original used l2=0.01; here weight decay
    comes from the optimizer)."""
    import keras
    from keras import layers

    reg = keras.regularizers.L2(l2) if l2 else None
    inp, x = _inputs(input_shape)
    for _ in range(2):
        x = layers.Conv2D(width, 3, use_bias=False, kernel_regularizer=reg)(x)
        x = layers.BatchNormalization(momentum=bn_momentum)(x)
        x = layers.ReLU()(x)
    for m in range(modules):
        filters = width * 2 ** (m + 1)
        residual = _projection(x, filters, strides=2)
        residual = layers.BatchNormalization(momentum=bn_momentum)(residual)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                                   depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
        x = layers.BatchNormalization(momentum=bn_momentum)(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                                   depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
        x = layers.BatchNormalization(momentum=bn_momentum)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, residual])
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Conv2D(n_classes, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Activation("softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inp, out, name="mini_xception")


def resnet(input_shape=INPUT_SHAPE, n_classes=7, width=24, blocks=(2, 2, 2), stem=1,
           dropout=0.3, bn_momentum=0.99):
    """Accuracy model: a ResNet for 48x48 faces. A stem of ``stem`` conv-BN-ReLU layers with
    ``width`` filters at full resolution, then len(blocks) stages of basic residual blocks
    (two 3x3 conv-BN, identity or 1x1 projection shortcut), stage i at half the previous
    resolution with 2*width*2**i filters (48, 96, 192 at 24, 12, 6 px with width=24), then
    global average pooling, dropout and softmax. Defaults (width=24): ~1.56 M params,
    ~256 MFLOPs per image; width=32: ~2.76 M params, ~454 MFLOPs.
    Downsampling is a strided 3x3 conv in the first block of each stage."""
    import keras
    from keras import layers

    inp, x = _inputs(input_shape)
    for _ in range(stem):
        x = _conv_bn_relu(x, width, bn_momentum=bn_momentum)
    for s, n in enumerate(blocks):
        filters = width * 2 ** (s + 1)
        for b in range(n):
            strides = 2 if b == 0 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _projection(x, filters, strides)
                shortcut = layers.BatchNormalization(momentum=bn_momentum)(shortcut)
            y = _conv_bn_relu(x, filters, strides=strides, bn_momentum=bn_momentum)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(momentum=bn_momentum, gamma_initializer="zeros")(y)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    out = _head(x, n_classes, dropout)
    return keras.Model(inp, out, name="resnet")


ARCHITECTURES = {
    "vgg": vgg,
    "resnet": resnet,
    "mini_xception": mini_xception,
    "mememoji": mememoji,
}


def arch_params(name: str) -> dict:
    """The tunable parameters of an architecture and their defaults."""
    fn = _builder(name)
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if k not in ("input_shape", "n_classes")}


def _builder(name: str):
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise FerError(f"unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}",
                       where="arch") from None


def build(name: str, input_shape=INPUT_SHAPE, n_classes: int = 7, **params) -> keras.Model:
    """Build architecture ``name``. Unknown names or parameters raise :class:`FerError`."""
    fn = _builder(name)
    allowed = arch_params(name)
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise FerError(f"unknown parameter(s) {bad} for {name}; expected some of "
                       f"{sorted(allowed)}", where="arch_params")
    if isinstance(params.get("blocks"), list):
        params["blocks"] = tuple(params["blocks"])
    try:
        return fn(input_shape=tuple(input_shape), n_classes=int(n_classes), **params)
    except (TypeError, ValueError) as e:
        raise FerError(f"cannot build {name} with {params}: {e}", where="arch_params") from None


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs per image (2 per multiply-add) of convolution and dense layers."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            out = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, layers.SeparableConv2D):
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            hw = out[1] * out[2]
            total += 2 * hw * kh * kw * cin * mult + 2 * hw * cin * mult * out[-1]
        elif isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            total += 2 * out[1] * out[2] * kh * kw * cin * mult
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            total += 2 * out[1] * out[2] * kh * kw * cin * cout
        elif isinstance(layer, layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return int(total)


def describe(name: str, input_shape=INPUT_SHAPE, n_classes: int = 7, **params) -> dict:
    """{"name", "params", "flops", "doc", "defaults"} of an architecture (built, not trained)."""
    model = build(name, input_shape, n_classes, **params)
    doc = inspect.getdoc(_builder(name)) or ""
    return {"name": name, "params": int(model.count_params()), "flops": count_flops(model),
            "doc": doc, "defaults": arch_params(name)}
