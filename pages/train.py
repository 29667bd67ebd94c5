"""Train: configure a run, start it as a job (its own process), and watch it learn live."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import json
from pathlib import Path

import streamlit as st

from fer_core import architectures, runs
from fer_core.errors import FerError
from fer_core.labels import LABEL_SETS
from fer_core.training import OPTIMIZERS, SCHEDULES, TrainConfig
from ui.data import active_choice, dataset_label, get_active_dataset
from ui.figures import training_curves_figure
from fer_core.job_events import fmt_duration
from ui.jobs import current_job, resume_job, snapshot, start_training_job
from ui.text import md

ROOT = Path(__file__).resolve().parent.parent
D = TrainConfig()  # defaults
ARCHS = list(architectures.ARCHITECTURES)


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


@st.fragment(run_every=1)
def live_view():
    snap = snapshot(current_job())
    if not snap or not snap["running"]:  # the job ended: rerun the page to show how
        st.rerun(scope="app")
    st.progress(snap["progress"], text=f"epoch {snap['epoch']}/{snap['epochs']} · batch "
                f"{snap['batch']}/{snap['batches']} · ETA {fmt_duration(snap['eta'])}")
    m = st.columns(4)
    m[0].metric("images/s", f"{snap['images_per_sec']:.0f}" if snap["images_per_sec"] else "–")
    m[1].metric("train accuracy (batch)", pct(snap["accuracy"]))
    m[2].metric("best val accuracy", pct(snap["best_val_accuracy"]))
    m[3].metric("elapsed", fmt_duration(snap["elapsed"]))
    st.plotly_chart(training_curves_figure(snap["history"], snap["batch_rows"]), key="live_curves")
    if st.button("⏹ Stop", type="primary"):
        snap["job"].stop()
        st.toast("Stopping after this batch; the best model so far is kept.")


def ended(snap):
    """The last run's outcome: summary, and what went wrong when it did not finish."""
    status = (snap["status"] == "finished" and snap["result_status"]) or snap["status"]
    st.subheader(f"Last run `{snap['run_id']}`: {status.replace('_', ' ')}")
    if snap["status"] == "crashed":
        st.error(f"The training process crashed ({snap['reason']}). The app is unaffected; "
                 "the run keeps its best model and its last checkpoint. Last lines of its log:")
        st.code("\n".join(snap["log_tail"]) or "(empty log)", language="text")
    elif snap["status"] == "interrupted":
        st.warning("The training process ended without reporting (it was killed, or the app "
                   "or the machine restarted). The run keeps its last checkpoint.")
        if snap["log_tail"]:
            st.code("\n".join(snap["log_tail"]), language="text")
    elif snap["error"]:
        st.error(md(snap["error"]))
    c = st.columns(3)
    c[0].metric("best epoch", snap["best_epoch"] or "–")
    c[1].metric("best val accuracy", pct(snap["best_val_accuracy"]))
    c[2].metric("training time", fmt_duration(snap["elapsed"]))
    if snap["resumable"] and st.button("↻ Resume", key="resume"):
        try:
            st.session_state["my_run"] = str(resume_job(snap["job"]).job_dir)
        except FerError as exc:
            st.session_state["train_error"] = f"Cannot resume: {exc}"
        st.rerun()
    if snap["history"]:
        st.plotly_chart(training_curves_figure(snap["history"], snap["batch_rows"]), key="last_curves")
    if snap["has_model"] and st.session_state.get("my_run") == snap["run_dir"]:
        st.session_state["active_model"] = snap["run_dir"]  # Evaluate opens this run
    if snap["has_model"] and (ROOT / "pages/evaluate.py").exists():
        st.page_link("pages/evaluate.py", label="Evaluate this model", icon="📊")


st.title("🏋️ Train")
job = current_job()
snap = snapshot(job)
if job is not None and snap is None and job.running:
    st.info(f"A {job.kind} job is running on this runs folder; training can start when it ends.")
if snap and snap["running"]:
    st.info(f"Training **{snap['arch']}** · run `{snap['run_id']}`. It runs in its own process, "
            "one job at a time; it keeps going if you leave or reload this page.")
    live_view()
elif snap:
    with st.container(border=True):
        ended(snap)

ds = get_active_dataset()
st.caption(f"Dataset: {dataset_label(ds)} · choose another in the Dataset Explorer")
if err := st.session_state.pop("train_error", None):
    st.error(md(err))
with st.form("train_config"):
    c = st.columns(4)
    arch = c[0].selectbox("Architecture", ARCHS, ARCHS.index(architectures.DEFAULT_ARCH), key="tr_arch")
    epochs = c[1].number_input("Epochs", 1, 1000, D.epochs, key="tr_epochs")
    batch_size = c[2].number_input("Batch size", 1, 4096, D.batch_size, key="tr_batch")
    max_train = c[3].number_input("Max training images (0 = all)", 0, 10**7, 0, 500,
                                  key="tr_max")
    c = st.columns(4)
    lr = c[0].number_input("Learning rate", 1e-6, 1.0, D.lr, format="%.5f", key="tr_lr")
    schedule = c[1].selectbox("LR schedule", SCHEDULES, SCHEDULES.index(D.schedule), key="tr_sched")
    optimizer = c[2].selectbox("Optimizer", OPTIMIZERS, OPTIMIZERS.index(D.optimizer), key="tr_opt")
    label_set = c[3].selectbox("Label set", list(LABEL_SETS), key="tr_labels",
                               index=list(LABEL_SETS).index(ds.label_set if ds else D.label_set))
    with st.expander("Augmentation"):
        c = st.columns(6)
        flip = c[0].checkbox("Flip", D.flip, key="tr_flip")
        shift = c[1].slider("Shift", 0.0, 0.5, D.shift, key="tr_shift")
        rotation = c[2].slider("Rotation °", 0.0, 45.0, D.rotation, key="tr_rot")
        zoom = c[3].slider("Zoom", 0.0, 0.5, D.zoom, key="tr_zoom")
        contrast = c[4].slider("Contrast", 0.0, 1.0, D.contrast, key="tr_contrast")
        erasing = c[5].slider("Erasing p", 0.0, 1.0, D.erasing, key="tr_erase")
    with st.expander("Advanced"):
        c = st.columns(5)
        weight_decay = c[0].number_input("Weight decay", 0.0, 1.0, D.weight_decay,
                                         format="%.5f", key="tr_wd")
        label_smoothing = c[1].number_input("Label smoothing", 0.0, 0.9, D.label_smoothing,
                                            key="tr_ls")
        class_weight = c[2].selectbox("Class weights", ["none", "balanced"], key="tr_cw")
        patience = c[3].number_input("Early-stop patience (0 = off)", 0, 1000, D.patience,
                                     key="tr_pat")
        seed = c[4].number_input("Seed", 0, 2**31 - 1, D.seed, key="tr_seed")
        arch_params = st.text_input("Architecture parameters (JSON)", "{}", key="tr_params",
                                    help="Builder parameters, e.g. {\"width\": 16} for vgg; "
                                         "the defaults of each architecture are listed below.")
        st.caption(" · ".join(f"{a}: {json.dumps(architectures.arch_params(a))}" for a in ARCHS))
    submitted = st.form_submit_button("▶ Start training", type="primary", disabled=ds is None)

if submitted:
    try:
        params = json.loads(arch_params or "{}")
    except json.JSONDecodeError as exc:
        params = None
        st.session_state["train_error"] = f"Architecture parameters: not valid JSON ({exc})"
    if params is not None:
        config = TrainConfig(
            arch=arch, arch_params=params, epochs=int(epochs), batch_size=int(batch_size),
            optimizer=optimizer, lr=float(lr), schedule=schedule, weight_decay=weight_decay,
            label_smoothing=label_smoothing, class_weight=class_weight, flip=flip, shift=shift,
            rotation=rotation, zoom=zoom, contrast=contrast, erasing=erasing,
            label_set=label_set, seed=int(seed), patience=int(patience))
        run_dir = runs.runs_dir() / runs.new_run_id(arch)
        try:
            started = start_training_job(ds, active_choice(), config, run_dir, int(max_train))
            st.session_state["my_run"] = str(started.job_dir)
        except FerError as exc:
            st.session_state["train_error"] = f"Cannot start training: {exc}"
    st.rerun()

st.subheader("Past runs")
past = runs.list_runs()
if not past:
    st.caption(f"No runs yet in {runs.runs_dir()}.")
else:
    labels = {r.id: f"{r.id} · {r.metrics.get('status', '?')} · best val "
                    f"{pct(r.metrics.get('best_val_accuracy'))}" for r in past}
    chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="past_run")
    run = next(r for r in past if r.id == chosen)
    st.plotly_chart(training_curves_figure(run.history), key="past_curves")
    st.caption(f"{md(run.path)} · {run.metrics.get('epochs_done', len(run.history))} epochs · "
               f"{fmt_duration(run.metrics.get('train_time_sec'))}")
