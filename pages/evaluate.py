"""Evaluate: where and how a model fails on a split of the active dataset."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import pandas as pd
import streamlit as st

from fer_core import evaluation, explain
from fer_core.errors import FerError
from ui.data import dataset_label, get_active_dataset
from ui.figures import (confusion_figure, delta_figure, face_gallery, per_class_figure,
                        prob_bars, reliability_figure, true_vs_pred_figure)
from ui.models import demo_note, evaluate_cached, get_model, model_picker
from ui.text import md

st.title("📊 Evaluate")
ds = get_active_dataset()
st.caption(f"Dataset: {dataset_label(ds)} · change it in the Dataset Explorer.")
if ds is None:
    st.stop()

c1, c2, c3, c4 = st.columns([3, 1, 3, 1])
model_path = model_picker("Model", key="eval_model", container=c1)
if model_path is None:
    st.stop()
splits = ds.splits + ["all"]
split = c2.selectbox("Split", splits, key="eval_split",
                     index=splits.index("val") if "val" in splits else 0,
                     help="FER2013: val = PublicTest, test = PrivateTest.")
other = model_picker("Compare with", key="eval_other", exclude=model_path, remember=False,
                     container=c3) if c3.toggle("Compare with another model",
                                                key="eval_cmp") else None
try:
    default_tta = get_model(model_path).default_tta
except FerError as exc:
    st.error(f"Cannot use this model: {exc}")
    st.stop()
tta = c4.toggle("TTA", value=default_tta, key="eval_tta",
                help="Test-time augmentation: average the predictions of each face and its "
                     "mirror image.")

try:
    report, preds = evaluate_cached(model_path, ds, split, tta)
    other_report = evaluate_cached(other, ds, split, tta)[0] if other else None
except FerError as exc:
    st.error(f"Cannot evaluate: {md(exc)}")
    st.stop()

if report.get("remapped"):
    st.info(f"Labels mapped explicitly: {report['remapped']}.")
if report.get("synthetic_data"):
    note = demo_note(model_path)
    if note:
        st.warning(note)
    else:
        st.caption("Synthetic demo data: drawn faces, not real people.")

# --- headline -----------------------------------------------------------------------------
cmp = evaluation.compare(other_report, report) if other_report else None
cols = st.columns(5 if tta else 4)
for col, (key, name) in zip(cols, [("accuracy", "Accuracy"), ("top2_accuracy", "Top-2 accuracy"),
                                   ("macro_f1", "Macro F1"), ("ece", "ECE (calibration)")]):
    delta = cmp["headline"][key]["delta"] if cmp and key in cmp["headline"] else None
    col.metric(name, f"{report[key]:.1%}" if key != "ece" else f"{report[key]:.3f}",
               delta=None if delta is None else (f"{delta:+.1%}" if key != "ece"
                                                 else f"{delta:+.3f}"),
               delta_color="inverse" if key == "ece" else "normal",
               help=f"vs {cmp['a']}" if cmp else None)
if tta:
    cols[4].metric("TTA effect on accuracy", f"{report['accuracy']:.1%}",
                   delta=f"{report['tta_gain']:+.1%}",
                   help=f"without TTA: {report['accuracy_no_tta']:.1%}")
st.caption(f"{md(report['model'])} on {report['n']:,} faces of split '{split}' · "
           f"second-guess rate {report['second_guess_rate']:.0%} (of the wrong answers, "
           f"how often the true label was the runner-up) · "
           f"{report['timing']['faces_per_s']:,.0f} faces/s "
           f"({report['timing'].get('backend', 'keras')})")

# The tabs track which one is open, so that "What it sees" runs only when opened: it reads the
# Keras model (feature maps, Grad-CAM), which imports TensorFlow into the app's server.
tabs = st.tabs(["Confusion matrix", "Per class", "Examples", "What it sees", "Calibration",
                "Side by side", "Export"], key="eval_tab", on_change="rerun")

# --- confusion matrix + cell gallery -------------------------------------------------------
with tabs[0]:
    names = list(report["labels"])
    normalized = st.toggle("Row-normalised", key="cm_norm")
    event = st.plotly_chart(confusion_figure(report, normalized), key="cm_chart",
                            on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False})
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points:
        clicked = (points[0].get("y"), points[0].get("x"))
        if clicked != st.session_state.get("cm_last_click") and set(clicked) <= set(names):
            st.session_state["cm_last_click"] = clicked
            st.session_state["cm_true"], st.session_state["cm_pred"] = clicked
    for k, default in (("cm_true", names[0]), ("cm_pred", names[min(1, len(names) - 1)])):
        if st.session_state.get(k) not in names:
            st.session_state[k] = default
    st.caption("Click a cell (or choose below) to see its faces.")
    g1, g2, g3 = st.columns([2, 2, 1])
    true_name = g1.selectbox("True", names, key="cm_true")
    pred_name = g2.selectbox("Predicted", names, key="cm_pred")
    limit = g3.number_input("Show up to", 8, 200, 32, 8, key="cm_limit")
    idx = evaluation.confusion_cell(preds.y_true, preds.y_pred, names.index(true_name),
                                    names.index(pred_name))
    st.markdown(f"**True {true_name}, predicted {pred_name}: {len(idx)} faces**")
    face_gallery(evaluation.gallery_items(preds, idx[:int(limit)]), key="cell")

# --- per class ------------------------------------------------------------------------------
with tabs[1]:
    table = pd.DataFrame(report["per_class"]).T
    table.index.name = "class"
    st.dataframe(table.style.format({"precision": "{:.1%}", "recall": "{:.1%}",
                                     "f1": "{:.1%}", "support": "{:,.0f}"}))
    st.plotly_chart(per_class_figure(report))
    st.plotly_chart(true_vs_pred_figure(report))

# --- examples -------------------------------------------------------------------------------
with tabs[2]:
    st.subheader("Random predictions")
    if st.button("Shuffle", key="ex_shuffle"):
        st.session_state["ex_seed"] = st.session_state.get("ex_seed", 0) + 1
    sample = evaluation.gallery_items(
        preds, evaluation.random_sample(report["n"], k=8, seed=st.session_state.get("ex_seed", 0)))
    grid = st.columns(4)
    for k, it in enumerate(sample):
        with grid[k % 4]:
            st.image(it["image"], width=96,
                     caption=f"{'✅' if it['correct'] else '❌'} true {it['true']}, "
                             f"predicted {it['pred']}")
            st.plotly_chart(prob_bars(it["probs"], height=180), key=f"ex_bars_{k}",
                            config={"displayModeBar": False})
    st.subheader("Most confident mistakes")
    face_gallery(evaluation.gallery_items(
        preds, evaluation.confident_mistakes(preds.y_true, preds.probs, k=16)), key="mist")


# --- feature maps and Grad-CAM -----------------------------------------------------------------
def what_it_sees() -> None:
    """Feature maps and Grad-CAM of one face (reads the Keras model)."""
    loaded = get_model(model_path)
    layers = explain.conv_layers(loaded.model)
    if not layers:
        st.info("This model has no convolutional layer to show.")
    else:
        f1, f2 = st.columns([1, 2])
        face = int(f1.number_input(f"Face (0–{report['n'] - 1} in this split)", 0,
                                   report["n"] - 1, 0, key="fm_face"))
        layer = f2.selectbox("Layer", layers, key="fm_layer")
        it = evaluation.gallery_items(preds, [face])[0]
        maps = explain.feature_maps(loaded.model, it["image"], layer)
        a, b, c = st.columns(3)
        a.image(it["image"], width=192, caption=f"true {it['true']}, predicted {it['pred']} "
                                                f"({it['confidence']:.0%})")
        t_idx, p_idx = names.index(it["true"]), names.index(it["pred"])
        if tuple(loaded.labels) == tuple(names):
            for col, (cls, what) in zip((b, c), ((p_idx, "predicted"), (t_idx, "true"))):
                try:
                    cam = explain.grad_cam(loaded.model, it["image"], cls)
                except Exception as exc:  # noqa: BLE001 - an odd user model must not crash
                    col.warning(f"Grad-CAM is not available for this model: {md(exc)}")
                    continue
                col.image(explain.overlay(it["image"], cam, size=192),
                          caption=f"Grad-CAM for the {what} class ({names[cls]})")
        else:
            b.info("Grad-CAM needs the model's own label set (the data was remapped).")
        st.markdown(f"**Feature maps of {md(layer)}** ({maps.shape[-1]} channels, "
                    f"{maps.shape[0]}×{maps.shape[1]})")
        st.image(explain.feature_grid(maps, max_maps=64), clamp=True, width=640)


with tabs[3]:
    if tabs[3].open:
        what_it_sees()

# --- calibration ------------------------------------------------------------------------------
with tabs[4]:
    before, after = report["uncalibrated"]["ece"], report["ece"]
    if report.get("calibrated"):
        fitted = get_model(model_path).calibration.record
        st.markdown(f"Probabilities are calibrated by temperature scaling (T = "
                    f"{report['temperature']:.3f}, fitted with `python -m fer_core calibrate` "
                    f"on {fitted.get('n', 0):,} faces of split '{fitted.get('split', '?')}' and "
                    f"stored in the model's calibration.json). Expected calibration error on "
                    f"this split: **{before:.3f} before, {after:.3f} after**; the predicted "
                    "class, and so accuracy, does not change.")
    else:
        st.markdown(f"This model has no calibration.json, so its probabilities are shown as the "
                    f"network outputs them (T = 1, ECE {after:.3f}). Fit one with "
                    "`python -m fer_core calibrate DATA --model RUN`.")
    r1, r2 = st.columns(2)
    r1.plotly_chart(reliability_figure(report, before=True), key="rel_before")
    r2.plotly_chart(reliability_figure(report), key="rel_after")

# --- side by side -----------------------------------------------------------------------------
with tabs[5]:
    if other_report is None:
        st.info("Switch on 'Compare with another model' above to see two models side by side.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(confusion_figure(other_report, True, title=f"{cmp['a']}"), key="cm_a")
        right.plotly_chart(confusion_figure(report, True, title=f"{cmp['b']}"), key="cm_b")
        deltas = pd.DataFrame({n: {m: v["delta"] for m, v in d.items()}
                               for n, d in cmp["per_class"].items()}).T
        st.markdown(f"**Per-class change, {md(cmp['b'])} minus {md(cmp['a'])}**")
        st.dataframe(deltas.style.format("{:+.1%}"))
        st.plotly_chart(delta_figure(deltas["f1"], "F1 change per class"))

# --- export -----------------------------------------------------------------------------------
with tabs[6]:
    stem = f"{report['model']}-{split}"
    e1, e2, e3 = st.columns(3)
    e1.download_button("Metrics JSON", evaluation.report_json(report), f"{stem}-metrics.json",
                       "application/json")
    e2.download_button("Per-class CSV", evaluation.metrics_to_csv(report), f"{stem}-metrics.csv",
                       "text/csv")
    e3.download_button("Confusion matrix PNG", evaluation.confusion_png(report, normalized),
                       f"{stem}-confusion.png", "image/png")
