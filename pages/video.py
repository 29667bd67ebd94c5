"""Video: emotions over time for every face in a recording, as a background job."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import streamlit as st

from fer_core.errors import FerError
from ui.data import max_upload_mb
from ui.models import detector_picker, model_picker
from fer_core.job_events import fmt_duration
from ui.text import md
from ui.video import (VIDEO_SUFFIXES, data_videos, results, share_figure, start, status,
                      store, timeline_figure)


@st.fragment(run_every=1)
def live(vid):
    s = status(vid)
    if not s["running"]:
        st.rerun(scope="app")
    p = s["progress"]
    st.progress(p["fraction"] or 0.0, text=f"{p['done']}/{p['total'] or '?'} frames · "
                f"{p['fps'] or 0:.0f} frames/s · ETA {fmt_duration(p['eta_sec'])}")
    if st.button("⏹ Cancel", key="video_cancel"):
        store().stop(vid)
        st.toast("Stopping; what was analysed so far is kept.")


st.title("🎞️ Video")
st.caption("Emotions over time for each face in a video file: a table per frame and face, a "
           "timeline per face, and an annotated copy. The analysis runs in the background and "
           "goes on if you leave this page.")
vid = store().latest()
snap = status(vid) if vid is not None else None
if snap and snap["running"]:
    st.info(f"Analysing **{md(snap['name'])}**.", icon="⏳")
    live(vid)
    st.stop()

if err := st.session_state.pop("video_error", None):
    st.error(err)
with st.form("video_form"):
    src = st.radio("Video", ["Upload", "From data/"], horizontal=True, key="video_src")
    upload = st.file_uploader(f"Video file (up to {max_upload_mb()} MB)", key="video_upload",
                              type=[s.strip(".") for s in VIDEO_SUFFIXES])
    found = data_videos()
    picked = st.selectbox("Video in data/", found, format_func=lambda p: p.name, key="video_pick",
                          index=None, placeholder="no videos in data/" if not found else None)
    c = st.columns(4)
    model = model_picker("Model", key="video_model", container=c[0])
    every = c[1].number_input("Analyse every N frames", 1, 60, 5, key="video_every",
                              help="Detect and classify faces on every N-th frame; faces are "
                                   "tracked in between, so ids stay with people.")
    smoothing = c[2].slider("Smoothing", 0.0, 0.95, 0.5, 0.05, key="video_smoothing",
                            help="Per-face moving average of the probabilities (0 = raw)")
    annotate = c[3].toggle("Annotated video", True, key="video_annotate")
    detector = detector_picker("video_det")
    go_ = st.form_submit_button("▶ Analyse", type="primary", disabled=model is None)
if go_:
    try:
        if src == "Upload" and upload is not None:
            start(upload.name, data=upload.getvalue(), model=model, every=every,
                  smoothing=smoothing, annotate=annotate, detector=detector)
        elif src == "From data/" and picked is not None:
            start(picked.name, path=picked, model=model, every=every, smoothing=smoothing,
                  annotate=annotate, detector=detector)
        else:
            st.session_state["video_error"] = "Choose a video first."
    except FerError as exc:
        st.session_state["video_error"] = f"Cannot analyse this video: {md(exc)}"
    st.rerun()

if snap is None:
    st.stop()
st.subheader(f"Last video: {md(snap['name'])} ({snap['status']})", anchor=False)
if snap["status"] not in ("finished", "stopped"):
    st.error(md(snap["error"]) if snap["error"] else
             f"The analysis ended ({snap['status']}, {snap['signal'] or 'no signal'}).")
    if snap["log_tail"]:
        st.code("\n".join(snap["log_tail"][-10:]), language=None)
    st.stop()
res = results(snap["job_dir"])
if res is None:
    st.warning("No results were written.")
    st.stop()
summary, df = res["summary"], res["frames"]
for w in summary["warnings"]:
    st.warning(md(w))
v, p = summary["video"], summary["processing"]
m = st.columns(4)
m[0].metric("duration", fmt_duration(v["duration_s"]))
m[1].metric("frames", v["frames"])
m[2].metric("faces", len(summary["faces"]))
m[3].metric("analysis", f"{p['frames_per_sec']:.0f} frames/s")
smoothed = p["smoothing"] > 0
for f in summary["faces"]:
    st.plotly_chart(timeline_figure(df, f["id"], p["labels"], smoothed), key=f"tl_{f['id']}")
if summary["faces"]:
    st.plotly_chart(share_figure(summary), key="video_share")
st.dataframe(df.head(500), hide_index=True)
if res["video"] is not None and res["video"].is_file():
    st.video(str(res["video"]))
d = st.columns(3)
d[0].download_button("⬇ frames.csv", res["csv"].read_bytes(), "frames.csv", "text/csv")
d[1].download_button("⬇ summary.json", res["json"].read_bytes(), "summary.json",
                     "application/json")
if res["video"] is not None and res["video"].is_file():
    d[2].download_button(f"⬇ {res['video'].name}", res["video"].read_bytes(), res["video"].name)
