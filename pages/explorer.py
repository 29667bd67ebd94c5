"""Dataset Explorer: class balance, sample faces, mean faces, intensities and flagged images."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import plotly.graph_objects as go
import streamlit as st

from ui.data import dataset_label, dataset_picker, dataset_stats
from ui.text import md

PAGE_SIZE = 40

st.title("🗂️ Dataset Explorer")
ds, choice = dataset_picker()
if ds is None:
    st.stop()
if ds.synthetic:
    st.info("**Synthetic demo**: drawn faces, not real people. Choose FER2013 above for real data.")
st.caption(dataset_label(ds))
if ds.skipped:
    with st.expander(f"⚠️ {len(ds.skipped):,} bad rows skipped"):
        st.dataframe([{"where": w, "reason": r} for w, r in ds.skipped[:500]], hide_index=True)

# Class distribution per split
counts = ds.counts()
cols = st.columns(len(counts) + 1)
cols[0].metric("Faces", f"{len(ds):,}")
for col, (split, c) in zip(cols[1:], counts.items()):
    col.metric(split, f"{c['total']:,}")
fig = go.Figure([go.Bar(name=split, x=list(c["per_class"]), y=list(c["per_class"].values()))
                 for split, c in counts.items()])
fig.update_layout(barmode="group", title="Faces per class and split", height=340,
                  margin=dict(t=40, b=0), xaxis_title="emotion", yaxis_title="faces")
st.plotly_chart(fig, key="class_dist")

# Sample grid
st.subheader("Samples")
f1, f2, f3 = st.columns([1, 1, 1], vertical_alignment="bottom")
split = f1.selectbox("Split", ["all"] + ds.splits, key="grid_split")
cls = f2.selectbox("Class", ["all"] + list(ds.label_names), key="grid_class")
if f3.button("🔀 Reshuffle"):
    st.session_state["grid_seed"] = st.session_state.get("grid_seed", 0) + 1
label = None if cls == "all" else ds.label_names.index(cls)
idx = ds.indices(split, label, seed=st.session_state.get("grid_seed", 0))
if len(idx) == 0:
    st.warning(md(f"No faces of class {cls!r} in split {split!r}."))
else:
    n_pages = (len(idx) + PAGE_SIZE - 1) // PAGE_SIZE
    st.caption(f"{len(idx):,} faces match · page size {PAGE_SIZE}")
    page = st.pagination(n_pages, key=f"grid_page_{split}_{cls}")
    shown = idx[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    grid, big = st.columns([4, 1])
    grid.image([ds.images[i] for i in shown], width=72,
               caption=[f"#{i} {ds.label_names[ds.labels[i]]} ({ds.split[i]})" for i in shown])
    pick = big.selectbox("Larger view", shown.tolist(), format_func=lambda i: f"#{i}",
                         key="grid_big")
    big.image(ds.images[pick], width=200,
              caption=f"#{pick} · {ds.label_names[ds.labels[pick]]} · {ds.split[pick]}")

# Statistics
with st.spinner("Computing statistics…"):
    stats = dataset_stats(choice, ds)
st.subheader("Mean face per class")
st.image(list(stats["mean_faces"].values()), width=96, caption=list(stats["mean_faces"]))

st.subheader("Pixel intensity")
hist = go.Figure([go.Scatter(y=h, name=s, mode="lines") for s, h in stats["histograms"].items()])
st.plotly_chart(hist.update_layout(height=260, margin=dict(t=10, b=0), xaxis_title="grey level",
                                   yaxis_title="pixels"), key="intensity")

st.subheader("Flagged images")
flags = stats["flagged"]
summary = flags.summary()
m1, m2, m3 = st.columns(3)
m1.metric("Blank / near-constant", f"{summary['blank']:,}")
m2.metric("Duplicate groups across splits", f"{summary['duplicates_across_splits']:,}")
m3.metric("Duplicate groups within a split", f"{summary['duplicates_within_splits']:,}")
if len(flags.blank):
    with st.expander(f"Blank / near-constant: first {min(len(flags.blank), 32)}"):
        st.image([ds.images[i] for i in flags.blank[:32]], width=64,
                 caption=[f"#{i} {ds.split[i]}: {r}" for i, r in
                          zip(flags.blank[:32], flags.blank_reasons)])
if flags.cross_split_groups:
    with st.expander("Duplicated across splits (train/test leakage)"):
        groups = flags.cross_split_groups[:32]
        st.image([ds.images[g[0]] for g in groups], width=64,
                 caption=[" = ".join(f"#{i} {ds.split[i]}" for i in g[:3]) for g in groups])
