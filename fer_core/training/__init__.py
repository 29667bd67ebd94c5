"""Training: :class:`TrainConfig`, :func:`train`, and the "train" job kind.

A small package: :mod:`~fer_core.training.config` (the config and its validation),
:mod:`~fer_core.training.pipeline` (the input pipeline), :mod:`~fer_core.training.loop` (the
epoch loop and its hooks), :mod:`~fer_core.training.summary` (metrics.json, model card, SWA
after the fact) and :mod:`~fer_core.training.job` (training as a job of :mod:`fer_core.jobs`,
in its own process). Importing it does not import TensorFlow.

Pipeline
--------
``tf.data`` from the in-memory uint8 arrays: shuffle (seeded, reshuffled each epoch), batch,
augment whole batches with Keras preprocessing layers (flip, translation, rotation, zoom,
contrast, random erasing; train split only) with ``num_parallel_calls``, then optionally
MixUp or CutMix of faces and targets within the batch; targets are one-hot (or soft labels,
or mixed with the flip-averaged predictions of teacher models: distillation, see
:mod:`fer_core.transfer`), class weights as sample weights; prefetch. The model itself starts
with a Rescaling layer; ``init_from`` starts it from another model's weights.

Loop
----
:func:`train` runs ``model.fit`` one epoch at a time, then evaluates on the val split, so that
a stop request (``stop_event.is_set()``, checked after every batch) ends training within one
batch without running validation, and so that every epoch is checkpointed atomically by the
loop's hooks (:mod:`fer_core.training.loop`): ``model.keras`` = best val accuracy so far
(weights only, small), ``last.keras`` = the latest epoch with optimizer state (the cosine
schedule is a function of the optimizer's step counter, so a resumed run continues the schedule
exactly), ``state.json`` and a row in ``history.jsonl``.
``train(..., resume=True)`` (or the CLI's ``--resume RUN_DIR``) picks up from ``last.keras``.
Resuming with more ``epochs`` than the run was started with rebuilds the cosine schedule over
the new total (the learning rate then continues from that longer curve at the current step).
With ``swa_epochs`` set, the weights of the last epochs are averaged at the end
(:mod:`fer_core.swa`; ``model.keras`` is replaced only if the average is better on val).

Events
------
Every callback in ``callbacks`` is called with typed events (:mod:`fer_core.job_events`):
``Log(topic="train", stage="start", ...)``, per batch ``Progress(done=batch, total=batches,
rate=images/s, eta_sec, unit="batch", epoch, epochs, loss, accuracy, lr)``, per epoch
``Metric(epoch, epochs, eta_sec, loss, accuracy, val_loss, val_accuracy, lr, time_sec,
best_val_accuracy, best_epoch)``, ``Log(topic="swa", ...)`` and ``Done(status, ...)``.
``keras.callbacks.Callback`` instances are passed to ``fit`` instead.

Determinism
-----------
``keras.utils.set_random_seed(config.seed)`` seeds Python, NumPy, TF and Keras (weights,
dropout, augmentation); shuffling uses the same seed. On CPU the same seed, data and config give
the same first-epoch metrics. ``TrainConfig.deterministic=True`` additionally calls
``tf.config.experimental.enable_op_determinism()`` (process-wide; slower; for GPU runs).

GPUs and clusters
-----------------
:func:`choose_strategy` picks the ``tf.distribute`` strategy automatically:

* ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy``. Start the same command on every worker
  with its own ``TF_CONFIG`` (``{"cluster": {"worker": ["host1:12345", "host2:12345"]},
  "task": {"type": "worker", "index": i}}``); worker 0 (the chief) writes the run directory,
  the others write to a scratch dir. ``batch_size`` is the global batch (split over workers).
* more than one GPU visible -> ``MirroredStrategy`` over all of them (``CUDA_VISIBLE_DEVICES``
  chooses which); scale ``batch_size`` and ``lr`` with the number of GPUs.
* otherwise the default strategy (one GPU if present, else the CPU).

On a GPU box install ``tensorflow[and-cuda]`` in place of the CPU wheel; nothing else changes.
"""

from __future__ import annotations

from fer_core.training.config import (CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES,  # noqa: E402
                                      TrainConfig)
from fer_core.training.job import (resume_spec, start_training,  # noqa: E402
                                   train_spec)
from fer_core.training.loop import Hook, Loop, epoch_hooks, train  # noqa: E402
from fer_core.training.pipeline import (choose_strategy, class_weights,  # noqa: E402
                                        current_lr, label_targets, make_augmenter,
                                        make_dataset, make_mixer, make_optimizer,
                                        make_schedule, train_targets)
from fer_core.training.state import RunState  # noqa: E402
from fer_core.training.summary import apply_swa, record_swa, run_config  # noqa: E402

__all__ = ["CLASS_WEIGHTS", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "train", "Hook", "Loop",
           "epoch_hooks", "RunState", "apply_swa", "record_swa", "run_config",
           "start_training", "resume_spec", "train_spec", "choose_strategy", "class_weights", "current_lr",
           "label_targets", "make_augmenter", "make_dataset", "make_mixer", "make_optimizer",
           "make_schedule", "train_targets"]
