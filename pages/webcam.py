"""Webcam: live emotions from the browser's camera (streamlit-webrtc). Frames are never stored."""

import ui  # noqa: F401 - first: see ui/__init__.py (a fresh server's deep link, import order)

import av
import streamlit as st
from streamlit_webrtc import webrtc_streamer

from fer_core.errors import FerError
from fer_core.webcam import FrameAnnotator
from ui.figures import live_figure, prob_bars
from ui.models import detector_settings, get_predictor, ice_servers, model_picker, model_stamp
from ui.text import md

st.title("🎥 Webcam")
st.caption("Press START and allow the camera: faces are boxed and labelled live. "
           "Frames are processed in memory and never stored.")

c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
model_path = model_picker("Model", key="cam_model", container=c1)
mode = c2.radio("Overlay", ["box", "emoji"], horizontal=True, key="cam_mode",
                format_func={"box": "Boxes", "emoji": "Emoji (mememoji)"}.get)
smoothing = c3.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="cam_smooth",
                      help="Temporal smoothing of each face's probabilities "
                           "(0 = none; 0.9 ≈ averaging the last ~19 frames).")
detect_every = c4.slider("Full detection every N frames", 1, 10, 3, key="cam_every",
                         help="In between, faces are tracked near their last position.")
settings = detector_settings("cam_det", preset="realtime")
if model_path is None:
    st.stop()
try:
    predictor = get_predictor(model_path, settings)
    servers = ice_servers()
except FerError as exc:
    st.error(md(exc))
    st.stop()

# One annotator per session and (model, detector settings); live settings are just updated.
ann_key = (str(model_path), model_stamp(model_path), tuple(sorted(settings.items())))
if st.session_state.get("cam_ann_key") != ann_key:
    st.session_state["cam_annotator"] = FrameAnnotator(predictor, smoothing=smoothing,
                                                       detect_every=detect_every, mode=mode)
    st.session_state["cam_ann_key"] = ann_key
annotator: FrameAnnotator = st.session_state["cam_annotator"]
annotator.configure(smoothing=smoothing, mode=mode, detect_every=detect_every)


def callback(frame: av.VideoFrame) -> av.VideoFrame:  # runs in a worker thread: no st.* here
    out = annotator(frame.to_ndarray(format="bgr24"))
    return av.VideoFrame.from_ndarray(out, format="bgr24")


video_col, live_col = st.columns([3, 2])
with video_col:
    ctx = webrtc_streamer(key="fer-webcam", video_frame_callback=callback,
                          rtc_configuration={"iceServers": servers},
                          media_stream_constraints={"video": True, "audio": False},
                          async_processing=True)
    if not servers:
        st.caption("No ICE servers configured (fine on this machine); for a remote server set "
                   "FER_ICE_SERVERS, see the README.")


@st.fragment(run_every=1 if ctx.state.playing else None)
def live_panel():
    latest = annotator.latest()
    history = annotator.history(30)
    st.markdown(f"**faces seen: {len(history)}** in the last 30 s · frames processed: "
                f"{latest['processed']} · skipped: {latest['skipped']} · "
                f"{latest['fps']:.1f} fps · {latest['latency_ms']:.0f} ms per frame")
    fig = live_figure(history, annotator.labels)
    if fig is None:
        st.info("The live chart appears once a face is seen." if ctx.state.playing
                else "Press START to begin.")
    else:
        st.plotly_chart(fig, key="cam_live", config={"displayModeBar": False})
    if annotator.seconds_tracked() > 0:
        st.plotly_chart(prob_bars(annotator.summary(), height=260,
                                  title="Session summary: share of time per emotion"),
                        key="cam_summary", config={"displayModeBar": False})
    d1, d2 = st.columns(2)
    d1.download_button("Export CSV (timestamp, face, scores)", annotator.to_csv(),
                       "webcam-emotions.csv", "text/csv", key="cam_csv")
    if d2.button("Reset session", key="cam_reset"):
        annotator.reset()


with live_col:
    live_panel()
