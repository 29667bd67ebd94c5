"""Models: the shipped model and every run, with model card, metrics and curves; rename/delete;
the active model of the API fleet and its history; fine-tune from feedback, compare, promote,
roll back."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

from pathlib import Path

import pandas as pd
import streamlit as st

from fer_core import runs
from fer_core.errors import FerError
from ui.figures import history_curves_figure
from ui.models import (comparison_frames, default_replay, finetune_job, finetune_progress,
                       history_rows, lifecycle_settings, lifecycle_status, model_choices,
                       no_model_message, promote_run, resume_finetune, rollback_active,
                       run_details, start_finetune)
from ui.text import md

st.title("📦 Models")
st.caption(f"Runs live in `{runs.runs_dir()}` (set FER_RUNS_DIR to use another folder).")

flash = st.session_state.pop("models_flash", None)
if flash:
    st.success(flash)

choices = model_choices()
if not choices:
    st.info(no_model_message())
    st.stop()

rows = []
for c in choices:
    try:
        d = run_details(c.path)
    except FerError as exc:
        d = {"metrics": {}, "config": {}, "history": [], "error": str(exc)}
    m = d["metrics"]
    rows.append({"model": c.label, "architecture": d["config"].get("arch"),
                 "epochs": len(d["history"]) or None,
                 "val accuracy": m.get("val_accuracy", m.get("accuracy")),
                 "macro F1": m.get("macro_f1", m.get("val_macro_f1")), "path": str(c.path)})
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"val accuracy": st.column_config.NumberColumn(format="percent"),
                            "macro F1": st.column_config.NumberColumn(format="%.3f")})

pick = st.selectbox("Model", range(len(choices)), key="models_pick",
                    format_func=lambda i: choices[i].label)
chosen = choices[pick]
try:
    details = run_details(chosen.path)
except FerError as exc:
    st.error(f"Cannot read {md(chosen.path)}: {md(exc)}")
    st.stop()

card_tab, metrics_tab, curves_tab, loop_tab, manage_tab = st.tabs(
    ["Model card", "Metrics", "Curves", "Fine-tune & promote", "Rename / delete"])
with card_tab:
    if details["card"]:
        st.markdown(details["card"])
    else:
        st.info("This run has no model_card.md.")
with metrics_tab:
    scalars = {k: v for k, v in details["metrics"].items() if isinstance(v, (int, float))}
    cols = st.columns(min(4, max(1, len(scalars))))
    for i, (k, v) in enumerate(list(scalars.items())[:8]):
        cols[i % len(cols)].metric(k, f"{v:.1%}" if 0 <= v <= 1 and "loss" not in k else f"{v:.4g}")
    with st.expander("All metrics and the training config"):
        st.json({"metrics": details["metrics"], "config": details["config"]})
with curves_tab:
    shown = 0
    for keys, title in ((("loss", "val_loss"), "Loss"),
                        (("accuracy", "val_accuracy"), "Accuracy"),
                        (("lr", "learning_rate"), "Learning rate")):
        fig = history_curves_figure(details["history"], keys, title)
        if fig is not None:
            st.plotly_chart(fig, key=f"curve_{title}")
            shown += 1
    if not shown:
        st.info("No training history recorded for this model.")
with manage_tab:
    if chosen.kind != "run":
        st.info("The shipped model (or FER_MODEL) cannot be renamed or deleted here.")
    else:
        new = st.text_input("New name", value=chosen.path.name, key="models_new_name")
        if st.button("Rename", key="models_rename"):
            try:
                target = runs.rename_run(chosen.path, new.strip())
            except FerError as exc:
                st.error(f"Cannot rename: {md(exc)}")
            else:
                st.session_state["models_flash"] = f"Renamed to {target}."
                st.rerun()
        sure = st.checkbox(f"Yes, delete {chosen.path.name} and all its files",
                           key="models_confirm")
        if st.button("Delete", key="models_delete", disabled=not sure, type="primary"):
            try:
                runs.delete_run(chosen.path)
            except FerError as exc:
                st.error(f"Cannot delete: {md(exc)}")
            else:
                st.session_state.pop("models_confirm", None)
                st.session_state["models_flash"] = f"Deleted {chosen.path.name}."
                st.rerun()


# ---- the model lifecycle ---------------------------------------------------------------------
def api_key_input(key: str) -> str | None:
    if lifecycle_settings().api_key is None:
        return None
    return st.text_input("API key (FER_API_KEY is set)", type="password", key=key)


@st.fragment(run_every=1.0)
def finetune_panel():
    job = finetune_job()
    if job is None:
        return
    p = finetune_progress(job)
    if p["status"] == "running":
        what = f"epoch {p['epoch']}/{p['epochs']}" + (f", then {p['stage']}" if p["stage"] else "")
        st.progress(p["progress"], text=f"Fine-tuning {md(p['run'])}: {what}")
        if st.button("Stop fine-tuning", key="ft_stop"):
            job.stop()
        return
    if p["status"] == "finished":
        if st.session_state.get("ft_listed") != p["run"]:   # list the new run in the picker
            st.session_state["ft_listed"] = p["run"]
            st.rerun()
        st.success(f"Fine-tuning finished: run {md(p['run'])} "
                   f"({p['result'].get('total_time_s', 0):.0f} s). Pick it above to compare and "
                   "promote it.")
    else:
        st.warning(f"Fine-tuning {md(p['run'])} {p['status']}: {md(p['error'] or '')}")
        if p["log_tail"]:
            st.code("\n".join(p["log_tail"][-8:]))
        if st.button("Resume fine-tuning", key="ft_resume"):
            try:
                resume_finetune(job)
            except FerError as exc:
                st.error(md(exc))
            st.rerun()


with loop_tab:
    comparison = None
    from fer_core import compare
    try:
        comparison = compare.read(chosen.path)
    except FerError as exc:
        st.error(md(exc))
    if comparison is not None:
        v = comparison["verdict"]
        st.subheader("Candidate vs current")
        st.caption(f"This run ({md(comparison['candidate'])}) against the model it was "
                   f"fine-tuned from ({md(comparison['current'])}) on the same faces; paired "
                   "bootstrap intervals of each accuracy difference.")
        if v["worse"]:
            st.error("**The candidate is worse** where it matters:\n\n" +
                     "\n".join(f"- {md(w)}" for w in v["worse"]))
        elif v["better"]:
            st.success("The candidate is better:\n\n" +
                       "\n".join(f"- {md(b)}" for b in v["better"]))
        else:
            st.info("No clear difference between the candidate and the current model.")
        sets, classes = comparison_frames(comparison)
        pct = st.column_config.NumberColumn(format="percent")
        pts = st.column_config.NumberColumn(format="%+.1f")
        st.dataframe(sets, hide_index=True, key="cmp_sets",
                     column_config={"current": pct, "candidate": pct,
                                    "difference (points)": pts})
        st.dataframe(classes, hide_index=True, key="cmp_classes",
                     column_config={"current": pct, "candidate": pct,
                                    "difference (points)": pts})
    st.subheader("Promote")
    worse = bool(comparison and comparison["verdict"]["worse"])
    sure = True
    if worse:
        sure = st.checkbox("The candidate is worse somewhere: promote it anyway",
                           key="promote_confirm")
    key = api_key_input("promote_key")
    if st.button(f"Promote {chosen.path.name}", key="promote", disabled=not sure):
        try:
            out = promote_run(chosen.path, key)
        except FerError as exc:
            st.error(f"Cannot promote: {md(exc)}")
        else:
            msg = f"Promoted {out['model_id']}: every API instance follows within its poll."
            if out["warning"]:
                msg += f" Warning: {out['warning']}"
            st.session_state["models_flash"] = msg
            st.rerun()
    st.subheader("Fine-tune from feedback")
    st.caption("Trains a new run from this model on the corrections in the feedback store "
               "(FER_FEEDBACK_DB), mixed with replay faces of its training data; part of the "
               "feedback is held out for the comparison.")
    mode = st.radio("What to train", ["head", "full"], horizontal=True, key="ft_mode",
                    format_func={"head": "the classifier layer (fast, keeps the features)",
                                 "full": "every layer"}.get)
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Fine-tuning epochs", 1, 200, 20 if mode == "head" else 4,
                             key=f"ft_epochs_{mode}")
    replay = c2.number_input("Replay faces per feedback face", 0.0, 100.0,
                             float(lifecycle_settings().finetune_replay), key="ft_replay")
    holdout = c3.number_input("Held-out share", 0.05, 0.8, 0.2, key="ft_holdout")
    data = st.text_input("Replay data", value=default_replay(chosen.path), key="ft_data")
    if st.button("Start fine-tuning", key="ft_start"):
        try:
            start_finetune(chosen.path, data=data, mode=mode, epochs=int(epochs),
                           replay=float(replay), holdout=float(holdout))
        except FerError as exc:
            st.error(f"Cannot start: {md(exc)}")
    finetune_panel()

st.divider()
st.subheader("Active model of the API")
try:
    status = lifecycle_status()
except FerError as exc:
    st.warning(f"Feedback store unavailable: {md(exc)}")
else:
    act = status["active"]
    if act["model_id"]:
        st.markdown(f"Every `serve` instance on this store answers with **{md(act['model_id'])}**"
                    f" (pointer version {act['version']}, from run "
                    f"{md(Path(act['run']).name if act['run'] else '?')}).")
    else:
        st.markdown("Nothing promoted: each `serve` instance uses its own FER_MODEL "
                    "(or the shipped model).")
    if status["history"]:
        st.dataframe(pd.DataFrame(history_rows(status)), hide_index=True, key="history")
    if status["can_rollback"]:
        sure_back = st.checkbox("Yes, roll every instance back", key="rollback_confirm")
        back_key = api_key_input("rollback_key")
        if st.button("Roll back", key="rollback", disabled=not sure_back):
            try:
                out = rollback_active(back_key)
            except FerError as exc:
                st.error(f"Cannot roll back: {md(exc)}")
            else:
                st.session_state["models_flash"] = (
                    f"Rolled back to {out['model_id'] or 'FER_MODEL (configured)'}.")
                st.session_state.pop("rollback_confirm", None)
                st.rerun()
