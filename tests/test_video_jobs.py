"""The one video job store (fer_core.video_jobs), reached the way the Video page reaches it
(ui.video.store: the runs folder, keep 5, one at a time) and the way the API does
(routers.videos.store_of: FER_VIDEO_DIR, TTL, FER_VIDEO_MAX_JOBS): the same class, suffix
list, slots, pruning and status. Whole analyses through each path: test_app_video.py and
test_video_api.py; the slot limit across server workers: test_pressure_video_limit.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from fer_core import jobs, synthetic, video_jobs
from fer_core.api.routers.videos import store_of
from fer_core.errors import FerError
from fer_core.settings import Settings
from fer_core.video_jobs import VIDEO_SUFFIXES, TooManyJobs, VideoJobStore

jobs.register("count", "tests.jobkinds:count")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synthetic.synthetic_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", seconds=0.5)


@pytest.fixture
def page_store(tmp_path, monkeypatch):
    from ui import video as uv
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    return uv.store()


@pytest.fixture
def api_store(tmp_path):
    return store_of(Settings(video_dir=tmp_path / "api-videos", video_ttl_hours=1.0,
                             video_max_jobs=2, feedback_db=tmp_path / "fb.sqlite3"))


def _ended_job(store: VideoJobStore, created_at: float) -> str:
    """An accepted job folder as the store lays it out (meta.json), with no process."""
    vid = uuid.uuid4().hex
    (store.root / vid).mkdir(parents=True)
    (store.root / vid / video_jobs.META).write_text(json.dumps(
        {"name": f"{vid[:4]}.mp4", "created_at": created_at, "size": 1, "probe": {}}))
    os.utime(store.root / vid / video_jobs.META, (created_at, created_at))
    return vid


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_page_and_the_api_use_one_store_and_one_suffix_list(page_store, api_store, tmp_path):
    from ui import video as uv
    assert type(page_store) is type(api_store) is VideoJobStore
    assert page_store.root == tmp_path / "runs" / "videos" and page_store.max_jobs == 1
    assert (page_store.keep, page_store.ttl_hours) == (5, None)
    assert (api_store.keep, api_store.ttl_hours, api_store.max_jobs) == (None, 1.0, 2)
    assert uv.VIDEO_SUFFIXES is VIDEO_SUFFIXES  # the page's uploader and data/ listing
    (tmp_path / "data").mkdir()
    for name in ("a.MPEG", "b.ts", "c.webm", "d.txt", "e.mp4.exe"):
        (tmp_path / "data" / name).write_bytes(b"x")
    assert [p.name for p in uv.data_videos(tmp_path / "data")] == ["a.MPEG", "b.ts", "c.webm"]
    vid = api_store.reserve()  # the API stores uploads with the same list
    assert api_store.input_path(vid, "Talk.MPEG").name == "input.mpeg"
    assert api_store.input_path(vid, "talk.exe").name == "input.bin"


def test_reserve_accept_and_status_of_a_job_not_started(api_store, clip):
    vid = api_store.reserve()
    with pytest.raises(FerError, match="unknown id, or expired") as err:
        api_store.status(vid)  # reserved, not accepted: not a job yet
    assert err.value.status == 404
    info = api_store.accept(vid, "talk.mp4", clip)
    assert info["frames"] == 15 and api_store.ids() == [vid]
    st = api_store.status(vid)
    assert (st["status"], st["running"], st["name"], st["summary"]) == \
        ("queued", False, "talk.mp4", None)
    assert st["progress"] == {"done": 0, "total": None, "fraction": None, "eta_sec": None,
                              "fps": None}
    with pytest.raises(FerError, match="still queued") as err:
        api_store.result_file(vid, "frames.csv")
    assert err.value.status == 409
    other = api_store.reserve()  # the second of two slots
    with pytest.raises(FerError, match="0.5 s long; the limit is 0.2 s") as err:
        api_store.accept(other, "talk.mp4", clip, max_seconds=0.2)
    assert err.value.status == 413
    with pytest.raises(FerError) as err:
        api_store.accept(other, "notes.mp4", __file__)
    assert err.value.status == 400 and api_store.ids() == [vid]


@pytest.mark.parametrize("bad", ["nope", "0" * 32, "../etc", "A" * 32])
def test_unknown_ids_are_404(api_store, page_store, bad):
    for store in (api_store, page_store):
        with pytest.raises(FerError) as err:
            store.status(bad)
        assert err.value.status == 404


def test_slots_are_counted_under_one_lock_and_dead_reservations_freed(api_store):
    first, second = api_store.reserve(), api_store.reserve()
    assert api_store.in_flight() == 2
    with pytest.raises(TooManyJobs, match="2 video job\\(s\\) already running") as err:
        api_store.reserve()
    assert err.value.status == 429
    api_store.discard(first)
    holder = json.loads((api_store.root / second / video_jobs.RESERVED).read_text())
    holder["pid"] = _dead_pid()  # the server that reserved it died while reading the upload
    (api_store.root / second / video_jobs.RESERVED).write_text(json.dumps(holder))
    assert api_store.in_flight() == 0
    third = api_store.reserve()  # pruned the dead reservation first
    assert sorted(p.name for p in api_store.root.iterdir() if not p.name.startswith(".")) == \
        [third]


def test_the_page_keeps_the_five_newest_jobs(page_store):
    made = [_ended_job(page_store, 1000.0 + i) for i in range(7)]
    assert page_store.ids() == made[::-1] and page_store.latest() == made[-1]
    assert sorted(page_store.prune()) == sorted(made[:2])
    assert page_store.ids() == made[2:][::-1]
    page_store.reserve()  # a start makes room: four old jobs and the new one
    assert page_store.ids() == made[3:][::-1]


def test_the_api_deletes_jobs_after_the_time_to_live(api_store):
    now = time.time()
    old, young = _ended_job(api_store, now - 2 * 3600), _ended_job(api_store, now - 600)
    assert api_store.prune(now=now) == [old] and api_store.ids() == [young]
    assert api_store.prune(now=now + 3600) == [young] and api_store.ids() == []
    _ended_job(api_store, now - 7200)
    api_store.reserve()
    assert api_store.ids() == []  # each reservation prunes first


def test_a_running_job_is_never_pruned_and_its_progress_is_read(page_store, api_store):
    for store in (page_store, api_store):
        vid = _ended_job(store, time.time() - 3 * 3600)
        d = store.root / vid
        handle = jobs.JobRunner(d).start("count", {"n": 1000, "sleep": 0.02}, d / "job")
        try:
            deadline = time.monotonic() + 60
            while store.status(vid)["progress"]["done"] < 2:
                assert time.monotonic() < deadline, store.status(vid)
                time.sleep(0.05)
            st = store.status(vid)
            assert st["running"] and st["status"] == "running"
            assert st["progress"]["total"] == 1000 and st["progress"]["fps"] > 0
            assert 0 < st["progress"]["fraction"] < 0.5 and st["progress"]["eta_sec"] > 0
            assert store.in_flight() == 1
            for _ in range(6):
                _ended_job(store, time.time())
            gone = store.prune(now=time.time() + 48 * 3600)  # past the TTL, beyond keep 5
            assert vid not in gone and vid in store.ids()
            assert len(gone) == (1 if store is page_store else 6)
            if store is page_store:
                with pytest.raises(TooManyJobs):
                    store.reserve()  # the page runs one job at a time
            store.stop(vid)
            assert handle.wait(60) and store.status(vid)["status"] == "stopped"
            assert vid in store.prune(now=time.time() + 48 * 3600, room=1)  # ended: it goes
        finally:
            if handle.running:
                handle.kill()


def test_a_job_deleted_by_another_process_meanwhile_is_passed_over(api_store, monkeypatch):
    """Two API workers prune the same folder: ids listed by one may be gone when it reads them."""
    kept = _ended_job(api_store, time.time())
    gone = uuid.uuid4().hex
    monkeypatch.setattr(api_store, "ids", lambda: [gone, kept])
    assert api_store.prune(now=time.time() + 48 * 3600) == [kept]
    assert api_store.states() == {} and api_store.in_flight() == 0
    assert not api_store.is_running(gone)
