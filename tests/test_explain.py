"""fer_core.explain: feature maps and Grad-CAM (functional, reloaded Sequential and nested
models), overlays."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core import explain
from fer_core.errors import FerError
from tests.factories import conv_pool_cnn, pattern_faces


# ------------------------------------------------------------------ what the network sees

def test_feature_maps_shapes_and_layers(trained_cnn, eval_faces):
    model, _ = trained_cnn
    assert explain.conv_layers(model) == ["conv1", "pool1", "conv2", "pool2"]
    assert explain.conv_layers(model, include_pool=False) == ["conv1", "conv2"]
    img = eval_faces.images[0]
    a = explain.feature_maps(model, img, "conv1")
    assert a.shape == (48, 48, 8) and a.dtype == np.float32 and a.max() > 0
    assert explain.feature_maps(model, img, "pool2").shape == (12, 12, 8)
    # same activations as an explicit sub-model
    import keras
    sub = keras.Model(model.inputs[0], model.get_layer("conv2").output)
    ref = np.asarray(sub(img[None, ..., None].astype("float32")))[0]
    assert np.allclose(explain.feature_maps(model, img, "conv2"), ref, atol=1e-5)
    grid = explain.feature_grid(a, cell=20, pad=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 22 - 2, 3 * 22 - 2)
    with pytest.raises(FerError, match="no layer"):
        explain.feature_maps(model, img, "nope")
    with pytest.raises(FerError):
        explain.feature_maps(model, np.zeros((10, 10), np.uint8), "conv1")


def test_nested_model_layers():
    model = conv_pool_cnn(nested=True)
    assert explain.conv_layers(model) == ["backbone/ic", "backbone/ip"]
    img = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    assert explain.feature_maps(model, img, "backbone/ic").shape == (48, 48, 4)
    cam = explain.grad_cam(model, img, 2, "backbone/ic")
    assert cam.shape == (48, 48) and 0 <= cam.min() and cam.max() <= 1


def test_grad_cam_highlights_the_bar(trained_cnn, eval_faces):
    model, _ = trained_cnn
    val = eval_faces.subset("val")
    inside, outside = [], []
    for c in range(7):
        row = 4 + c * (40 // 7)
        for img in val.images[val.labels == c][:3]:
            cam = explain.grad_cam(model, img, c, method="hirescam")
            assert cam.shape == (48, 48) and cam.dtype == np.float32
            assert cam.min() >= 0 and cam.max() == pytest.approx(1)
            inside.append(cam[row:row + 5, 6:42].mean())
            outside.append(np.delete(cam, range(max(row - 2, 0), row + 7), axis=0).mean())
            plain = explain.grad_cam(model, img, c)        # classic Grad-CAM, last conv/pool layer
            assert plain.shape == (48, 48) and 0 <= plain.min() and plain.max() <= 1
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > 2 * outside).all()
    assert inside.mean() > 5 * outside.mean()
    with pytest.raises(FerError):
        explain.grad_cam(model, val.images[0], 7)


def test_reloaded_sequential_model_gets_the_same_maps(trained_cnn, eval_faces, tmp_path):
    """A user's keras.Sequential, saved and reloaded: feature maps and Grad-CAM as for the same
    weights in a functional model (a reloaded Sequential's layer outputs are not connected to
    its inputs, so the maps are computed by calling its layers in order)."""
    import keras
    from keras import layers
    model, _ = trained_cnn
    seq = keras.Sequential([
        keras.Input((48, 48, 1)), layers.Rescaling(1 / 255),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(name="pool1"),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
        layers.MaxPooling2D(name="pool2"), layers.Flatten(),
        layers.Dense(7, activation="softmax", name="predictions")])
    seq.set_weights(model.get_weights())
    seq.save(tmp_path / "seq.keras")
    reloaded = keras.saving.load_model(tmp_path / "seq.keras", safe_mode=True)
    assert explain.conv_layers(reloaded) == explain.conv_layers(model)
    val = eval_faces.subset("val")
    for c in range(7):
        img = val.images[val.labels == c][0]
        for method in ("gradcam", "hirescam"):
            want = explain.grad_cam(model, img, c, method=method)
            got = explain.grad_cam(reloaded, img, c, method=method)
            assert np.allclose(got, want, atol=1e-4)
            if method == "hirescam":  # (Grad-CAM's averaged weights may cancel on a Flatten head)
                assert got.max() == pytest.approx(1)
        assert np.allclose(explain.feature_maps(reloaded, img, "conv1"),
                           explain.feature_maps(model, img, "conv1"), atol=1e-4)


def _backbone(kind: str):
    """The nested backbone of ``conv_pool_cnn(nested=True)`` as a Sequential or functional model."""
    import keras
    from keras import layers
    conv = layers.Conv2D(4, 3, padding="same", activation="relu", name="ic")
    if kind == "sequential":
        return keras.Sequential([keras.Input((48, 48, 1)), conv, layers.MaxPooling2D(name="ip")],
                                name="backbone")
    inp = keras.Input((48, 48, 1))
    return keras.Model(inp, layers.MaxPooling2D(name="ip")(conv(inp)), name="backbone")


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_reloaded_sequential_with_a_nested_backbone(tmp_path, kind):
    import keras
    from keras import layers
    keras.utils.set_random_seed(2)
    model = conv_pool_cnn(nested=True)                      # functional, Sequential backbone inside
    seq = keras.Sequential([
        keras.Input((48, 48, 1)), layers.Rescaling(1 / 255), _backbone(kind),
        layers.Flatten(), layers.Dense(7, activation="softmax", name="predictions")])
    seq.set_weights(model.get_weights())
    seq.save(tmp_path / "nested.keras")
    reloaded = keras.saving.load_model(tmp_path / "nested.keras", safe_mode=True)
    assert explain.conv_layers(reloaded) == ["backbone/ic", "backbone/ip"]
    img = pattern_faces(n_per_class=1, splits=("val",)).images[2]
    peaks = []
    for c in range(7):
        want = explain.grad_cam(model, img, c, "backbone/ic", method="hirescam")
        got = explain.grad_cam(reloaded, img, c, "backbone/ic", method="hirescam")
        assert np.allclose(got, want, atol=1e-4)
        peaks.append(got.max())
    assert max(peaks) == pytest.approx(1)                 # not all maps empty
    assert np.allclose(explain.feature_maps(reloaded, img, "backbone/ip"),
                       explain.feature_maps(model, img, "backbone/ip"), atol=1e-5)


def test_grad_cam_equals_hirescam_before_global_pooling():
    import keras
    keras.utils.set_random_seed(1)
    model = conv_pool_cnn(head="gap")
    img = pattern_faces(n_per_class=1, splits=("val",)).images[3]
    for c in range(7):
        g = explain.grad_cam(model, img, c)          # default layer pool2 feeds the global pooling
        h = explain.grad_cam(model, img, c, method="hirescam")
        assert np.allclose(g, h, atol=1e-4)
    assert explain.last_conv_layer(model) == "pool2"


def test_overlay():
    heat = np.zeros((48, 48), np.float32)
    heat[10:20] = 1
    img = np.full((48, 48), 128, np.uint8)
    out = explain.overlay(img, heat)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[15, 5], out[40, 5])      # hot rows are coloured differently
    assert out[15, 5, 0] > out[15, 5, 2]                   # jet: hot = red in RGB
    assert explain.overlay(img, heat, size=96).shape == (96, 96, 3)
