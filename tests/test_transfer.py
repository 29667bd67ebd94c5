"""MixUp/CutMix, starting a run from trained weights, and distillation from teacher models."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("keras")

from fer_core import evaluation, runs, transfer  # noqa: E402
from fer_core.data.dataset import Dataset  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.training import (TrainConfig, make_dataset, make_mixer, train,  # noqa: E402
                               train_targets)
from tests.factories import pattern_faces  # noqa: E402

TINY = dict(arch="vgg", arch_params={"width": 8, "depth": 1, "bn_momentum": 0.8},
            batch_size=16, lr=3e-3, warmup_epochs=0.0, shift=0.0, rotation=0.0, zoom=0.0,
            contrast=0.0, erasing=0.0)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def faces():
    return pattern_faces(n_per_class=24)


@pytest.fixture(scope="module")
def teacher(faces, tmp_path_factory):
    """A run trained on the toy faces (the starting weights and the teacher below)."""
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    result = train(faces, cfg(epochs=2), run_dir, command="fer_core train toy --epochs 2")
    assert result["best_val_accuracy"] > 0.5
    return run_dir


def _one_hot(faces):
    return np.eye(faces.n_classes, dtype=np.float32)[faces.labels]


@pytest.mark.parametrize("setting", [{"mixup": 1.0}, {"cutmix": 1.0}])
def test_mixing_blends_faces_and_their_targets(faces, setting):
    train_ds = faces.subset("train")
    mixer = make_mixer(cfg(**setting))
    data = make_dataset(train_ds.images, _one_hot(train_ds), 32, training=True, mixer=mixer)
    plain = make_dataset(train_ds.images, _one_hot(train_ds), 32, training=False)
    batches = [(bx.numpy()[..., 0], by.numpy()) for bx, by in data]
    y = np.concatenate([by for _, by in batches])
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert ((y > 1e-6).sum(axis=1) <= 2).all()          # a blend of (at most) two faces
    assert (y.max(axis=1) < 0.99).mean() > 0.5          # alpha 1: most targets are blended
    assert np.array_equal(np.concatenate([b[1].numpy() for b in plain]), _one_hot(train_ds))
    # the faces are blended too: a mixed face is no longer one of the originals
    x, y0 = batches[0]
    originals = train_ds.images.astype(np.float32)
    for face in x[y0.max(axis=1) < 0.99][:4]:
        assert np.abs(originals - face).reshape(len(originals), -1).max(axis=1).min() > 1


@pytest.mark.parametrize("setting", [{"mixup": 0.4}, {"cutmix": 1.0}])
def test_training_with_mixing_learns(faces, tmp_path, setting):
    result = train(faces, cfg(epochs=3, **setting), tmp_path / "run")
    assert result["best_val_accuracy"] > 0.5            # chance is 1/7
    card = runs.load_run(tmp_path / "run").card
    assert f"{next(iter(setting))} alpha" in card


def test_init_weights_copies_every_weight(teacher):
    from fer_core import architectures

    model = architectures.build("vgg", input_shape=(48, 48, 1), n_classes=7,
                         **TINY["arch_params"])
    transfer.init_weights(model, teacher)
    source = runs.load_model(teacher)
    for a, b in zip(source.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_a_run_started_from_trained_weights_starts_where_they_ended(faces, teacher, tmp_path):
    best = runs.load_run(teacher).metrics["best_val_accuracy"]
    tiny_lr = cfg(epochs=1, lr=1e-7)
    warm = train(faces, TrainConfig(**{**tiny_lr.to_dict(), "init_from": str(teacher)}),
                 tmp_path / "warm")
    cold = train(faces, tiny_lr, tmp_path / "cold")
    assert warm["best_val_accuracy"] >= best - 0.1
    assert cold["best_val_accuracy"] < best - 0.2        # no learning at this lr on its own
    card = runs.load_run(tmp_path / "warm").card
    assert f"Started from the weights of `{teacher}`" in card
    assert "`fer_core train toy --epochs 2`" in card    # how the starting weights were made


def test_starting_weights_of_another_architecture_are_rejected(faces, teacher, tmp_path):
    wider = cfg(epochs=1, arch_params={"width": 16, "depth": 1}, init_from=str(teacher))
    with pytest.raises(FerError, match="init_from.*shape.*--arch/--param"):
        train(faces, wider, tmp_path / "run")
    assert not (tmp_path / "run").exists()                  # nothing was left behind


def test_distillation_targets_mix_labels_and_flip_averaged_teachers(faces, teacher, tmp_path):
    train_ds = faces.subset("train")
    copy = tmp_path / "copy.keras"   # a second teacher given as a .keras file
    shutil.copy(teacher / "model.keras", copy)
    model = runs.load_model(teacher)
    flip_avg = evaluation.predict_proba(model, train_ds.images, tta=True)
    assert not np.allclose(flip_avg, evaluation.predict_proba(model, train_ds.images))
    targets = train_targets(cfg(teachers=[str(teacher), str(copy)], distill=0.6), train_ds)
    assert np.allclose(targets, 0.4 * _one_hot(train_ds) + 0.6 * flip_avg, atol=1e-5)
    assert np.array_equal(train_targets(cfg(), train_ds), _one_hot(train_ds))


def test_a_student_learns_from_the_teacher_alone(faces, teacher, tmp_path):
    # The student's training labels are shuffled: with distill=1 it never sees them, so
    # beating chance on the (true) val labels shows the teacher's predictions taught it.
    rng = np.random.default_rng(1)
    labels = faces.labels.copy()
    is_train = faces.split == "train"
    labels[is_train] = rng.permutation(labels[is_train])
    scrambled = Dataset(images=faces.images, labels=labels, split=faces.split,
                        label_names=faces.label_names, source="scrambled", label_set="fer7")
    student = train(scrambled, cfg(epochs=3, teachers=[str(teacher)], distill=1.0),
                    tmp_path / "student")
    assert student["best_val_accuracy"] > 0.5
    card = runs.load_run(tmp_path / "student").card
    assert f"Distilled from `{teacher}`: targets 0 x label + 1 x the teachers'" in card


def test_a_teacher_with_other_labels_is_rejected(faces, teacher, tmp_path):
    other = tmp_path / "other.keras"
    shutil.copy(teacher / "model.keras", other)
    (tmp_path / "other.labels.json").write_text(json.dumps(list(reversed(faces.label_names))))
    with pytest.raises(FerError, match="teachers.*other.keras.*the student"):
        train_targets(cfg(teachers=[str(other)], distill=0.5), faces.subset("train"))


@pytest.mark.parametrize("change, field", [
    ({"mixup": 0.2, "cutmix": 1.0}, "cutmix"),
    ({"mixup": -0.1}, "mixup"),
    ({"cutmix": 0.5, "class_weight": "balanced"}, "class_weight"),
    ({"distill": 0.5}, "distill"),
    ({"teachers": ["somewhere"], "distill": 0.5}, "teachers"),
    ({"teachers": [], "distill": 1.5}, "distill"),
    ({"init_from": "missing.keras"}, "init_from"),
])
def test_bad_settings_are_rejected_naming_the_field(faces, tmp_path, change, field):
    with pytest.raises(FerError) as err:
        train(faces, cfg(**change), tmp_path / "run")
    assert str(err.value).startswith(field)
    assert not (tmp_path / "run").exists()


def test_cli_distils_from_a_teacher_with_mixup(faces, teacher, tmp_path, capsys):
    from fer_core.cli import main
    from fer_core.data.fer2013 import to_csv_bytes

    csv = tmp_path / "faces.csv"
    csv.write_bytes(to_csv_bytes(faces.images, faces.labels, faces.split))
    out = tmp_path / "run"
    rc = main(["train", str(csv), "--arch", "vgg", "--param", "width=8", "--param", "depth=1",
               "--epochs", "2", "--batch-size", "16", "--lr", "0.003", "--warmup-epochs", "0",
               "--mixup", "0.2", "--init-from", str(teacher), "--teacher", str(teacher),
               "--distill", "0.5", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best_val_accuracy"] > 0.5
    config = json.loads((out / "config.json").read_text())
    assert (config["mixup"], config["init_from"], config["teachers"], config["distill"]) == \
        (0.2, str(teacher), [str(teacher)], 0.5)
    rc = main(["train", str(csv), "--resume", str(out), "--mixup", "0.4"])
    assert rc == 2 and "--resume" in capsys.readouterr().err
    rc = main(["train", str(csv), "--teacher", str(tmp_path / "nothing"), "--distill", "0.5",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "teachers: no model at" in capsys.readouterr().err
