"""The input pipeline: ``tf.data`` from uint8 faces, augmentation, MixUp/CutMix, targets
(labels, soft labels, distillation), class weights, learning-rate schedule and optimizer.

TensorFlow and Keras are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations


import numpy as np

from fer_core import settings
from fer_core.errors import FerError
from fer_core.training.config import TrainConfig


def choose_strategy():
    """MultiWorkerMirrored if TF_CONFIG is set, Mirrored if >1 GPU, else the default."""
    import tensorflow as tf

    if settings.tf_config():
        return _multi_worker_strategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _multi_worker_strategy():
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` accepts what Keras 3's ``fit`` passes it.

    Keras 3 reduces a whole ``(x, y[, w])`` batch in one ``reduce`` call and per-replica scalars
    with ``axis=0`` (keras-team/keras#20585); the strategy takes one tensor at a time and no axis
    on a scalar. This reduces each element of the structure, scalars across replicas only.
    """
    import tensorflow as tf

    class MultiWorkerMirrored(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            def one(v):
                local = (self.experimental_local_results(v)[0]
                         if isinstance(v, tf.distribute.DistributedValues) else v)
                scalar = getattr(getattr(local, "shape", None), "rank", None) == 0
                return super(MultiWorkerMirrored, self).reduce(
                    reduce_op, v, None if scalar else axis)
            return tf.nest.map_structure(one, value)

    return MultiWorkerMirrored()


def make_augmenter(config: TrainConfig, seed: int | None = None):
    """A train-only keras.Sequential of preprocessing layers (None when all are off).

    Works on float batches (B, 48, 48, 1) with values 0..255."""
    import keras
    from keras import layers

    seed = config.seed if seed is None else seed
    aug = []
    if config.flip:
        aug.append(layers.RandomFlip("horizontal", seed=seed + 1))
    if config.rotation:
        aug.append(layers.RandomRotation(config.rotation / 360.0, fill_mode="reflect",
                                         seed=seed + 2))
    if config.zoom:
        aug.append(layers.RandomZoom((-config.zoom, config.zoom), fill_mode="reflect",
                                     seed=seed + 3))
    if config.shift:
        aug.append(layers.RandomTranslation(config.shift, config.shift, fill_mode="reflect",
                                            seed=seed + 4))
    if config.contrast:
        aug.append(layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 5))
    if config.erasing:
        aug.append(layers.RandomErasing(factor=config.erasing, scale=(0.02, 0.15),
                                        value_range=(0, 255), seed=seed + 6))
    if not aug:
        return None
    return keras.Sequential(aug, name="augmentation")


def make_mixer(config: TrainConfig, seed: int | None = None):
    """The batch-level MixUp or CutMix layer of ``config`` (None when both are off)."""
    from keras import layers

    seed = config.seed if seed is None else seed
    if config.mixup:
        return layers.MixUp(alpha=config.mixup, seed=seed + 7)
    if config.cutmix:
        return layers.CutMix(factor=config.cutmix, seed=seed + 8)
    return None


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """'balanced' weights n / (k * count_c) (0 for absent classes)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def make_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, *, training: bool,
                 augmenter=None, mixer=None, weights: np.ndarray | None = None, seed: int = 0,
                 deterministic: bool = True):
    """tf.data pipeline from uint8 (N,48,48) faces and float targets (N,C); in training,
    ``augmenter`` transforms each batch of faces, then ``mixer`` (MixUp/CutMix) blends faces
    and targets within the batch (not with sample ``weights``)."""
    import tensorflow as tf

    x = images[..., None] if images.ndim == 3 else images
    tensors = (x, targets) if weights is None else (x, targets, weights)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def cast(x, *rest):
        return (tf.cast(x, tf.float32), *rest)

    ds = ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if training and augmenter is not None:
        def augment(x, *rest):
            return (augmenter(x, training=True), *rest)
        # Keras random layers draw from a stateful seed generator: parallel calls would take
        # the draws in a nondeterministic order, so the (vectorised, per-batch) augmentation
        # runs as one sequential stage, overlapped with training by prefetch.
        ds = ds.map(augment, num_parallel_calls=None if deterministic else tf.data.AUTOTUNE)
    if training and mixer is not None:
        if weights is not None:
            raise FerError("mixup/cutmix cannot carry sample weights", where="class_weight")

        def mix(x, y):
            out = mixer({"images": x, "labels": y}, training=True)
            return out["images"], out["labels"]
        ds = ds.map(mix, num_parallel_calls=None if deterministic else tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def label_targets(ds, n_classes: int) -> np.ndarray:
    """(N, C) float32 targets: the soft labels (normalised) if the data has them, else one-hot."""
    if ds.soft_labels is not None:
        t = np.asarray(ds.soft_labels, dtype=np.float32)
        return t / np.maximum(t.sum(axis=1, keepdims=True), 1e-9)
    return np.eye(n_classes, dtype=np.float32)[ds.labels]


def train_targets(config: TrainConfig, train_ds) -> np.ndarray:
    """The training targets: the labels (one-hot or soft), mixed with the teachers'
    predictions when ``config.distill`` is set."""
    from fer_core import transfer

    targets = label_targets(train_ds, train_ds.n_classes)
    if not config.distill:
        return targets
    teacher = transfer.teacher_targets(config.teachers, train_ds.images, train_ds.label_names)
    return ((1.0 - config.distill) * targets + config.distill * teacher).astype(np.float32)


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """The learning rate (schedule) for the optimizer: cosine with linear warm-up, or a float
    (constant / plateau, where the plateau logic lowers it between epochs)."""
    import keras

    if config.schedule != "cosine":
        return float(config.lr)
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(min(config.warmup_epochs * steps_per_epoch, total - 1))
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.lr * 0.01, decay_steps=max(1, total - warmup),
            alpha=0.01, warmup_target=config.lr, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total, alpha=0.01)


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    lr = make_schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay or None)


def current_lr(optimizer) -> float:
    import keras
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
