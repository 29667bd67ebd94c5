"""Models: the shipped model and every run, with model card, metrics and curves; rename/delete."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import pandas as pd
import streamlit as st

from fer_core import runs
from fer_core.errors import FerError
from ui.figures import history_curves_figure
from ui.models import model_choices, no_model_message, run_details
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

card_tab, metrics_tab, curves_tab, manage_tab = st.tabs(
    ["Model card", "Metrics", "Curves", "Rename / delete"])
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
