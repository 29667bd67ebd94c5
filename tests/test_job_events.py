"""Typed job events: JSON round trip, lines of the earlier format, bad lines, the one ETA
computation and the one duration formatter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_core.errors import FerError
from fer_core.job_events import (Done, Failed, Log, Meter, Metric, Progress, eta, fmt_duration,
                                 parse, parse_lines)


@pytest.mark.parametrize("event", [
    Progress(done=3, total=10, rate=2.5, eta_sec=2.8, unit="batch", epoch=1, loss=0.5),
    Metric(epoch=2, epochs=5, eta_sec=30.0, val_accuracy=0.61, best_epoch=2),
    Log(topic="swa", stage="average", epochs=[3, 5]),
    Done(status="stopped", best_val_accuracy=None),
    Failed(error="spec: the count went wrong"),
])
def test_every_kind_round_trips_through_one_json_line(event):
    line = event.to_json()
    assert "\n" not in line and json.loads(line)["type"] == event.type
    back = parse(line)
    assert type(back) is type(event) and back == event
    assert parse(event.to_dict()) == event


def test_numpy_values_are_written_as_json():
    e = Progress(done=1, total=2, rate=np.float32(1.5), loss=np.float64(0.25))
    assert json.loads(e.to_json())["loss"] == 0.25 and parse(e.to_json()).rate == 1.5


def test_lines_of_the_earlier_format_read_as_the_typed_kinds():
    batch = parse('{"type": "batch", "epoch": 2, "epochs": 3, "batch": 4, "batches": 11, '
                  '"images_per_sec": 120.0, "eta_sec": 9.5, "loss": 1.2}')
    assert isinstance(batch, Progress) and (batch.done, batch.total, batch.rate) == (4, 11, 120.0)
    assert batch.unit == "batch" and batch.epoch == 2 and batch.fraction == pytest.approx(4 / 11)
    assert isinstance(parse('{"type": "epoch", "epoch": 1, "val_accuracy": 0.5}'), Metric)
    assert parse('{"type": "end", "status": "finished"}') == Done(status="finished")
    start = parse('{"type": "start", "batches": 11, "initial_epoch": 0}')
    assert (start.topic, start.stage, start.batches) == ("train", "start", 11)
    assert parse('{"type": "swa", "stage": "done", "used": true}').topic == "swa"
    assert parse('{"type": "compare", "stage": "calibrate"}') == \
        Log(topic="finetune", stage="calibrate")
    # the video progress of before: fps stays an extra field, the rate is unknown
    video = parse('{"type": "progress", "done": 5, "total": 45, "eta_sec": 1.0, "fps": 30}')
    assert video.done == 5 and video.fps == 30


@pytest.mark.parametrize("line, says", [
    ("not json", "not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"done": 1}', "unknown event type 'None'"),
    ('{"type": "party"}', "unknown event type 'party'"),
    ('{"type": "progress", "done": "many"}', "progress event: field 'done'"),
    ('{"type": "metric"}', "metric event: field 'epoch': Field required"),
    ('{"type": "failed"}', "failed event: field 'error'"),
])
def test_a_bad_line_is_a_clear_error(line, says):
    with pytest.raises(FerError, match="event") as err:
        parse(line)
    assert says in str(err.value) and err.value.status == 400


def test_bad_lines_are_skipped_with_their_reason_and_the_rest_is_read():
    good = Progress(done=1, total=2).to_json().encode() + b"\n"
    events = parse_lines(good + b'{"type": "x"}\n\n' + b"\xff\xfe\n" + good, offset=100)
    assert [e.type for e in events] == ["progress", "log", "log", "progress"]
    assert all(e.stage == "unreadable" for e in events[1:3])
    assert events[1].message.startswith(f"event at byte {100 + len(good)}: ")
    assert "unknown event type 'x'" in events[1].message and "not JSON" in events[2].message


def test_eta_is_the_units_left_at_the_rate_plus_what_comes_after():
    assert eta(5, 10, 2.0) == 2.5
    assert eta(5, 10, 2.0, then=4.0) == 6.5      # e.g. validation after the last batch
    assert eta(10, 10, 2.0) == 0.0 and eta(12, 10, 2.0) == 0.0
    assert eta(5, None, 2.0) is None and eta(5, 10, None) is None and eta(5, 10, 0.0) is None


def test_eta_from_a_sequence_of_progress_observations():
    meter = Meter(total=50)
    assert meter.update(0, at=100.0) == (None, None)          # one observation: no rate yet
    assert meter.update(0, at=104.0) == (None, None)          # no unit done yet
    rate, left = meter.update(10, at=110.0)
    assert rate == pytest.approx(1.0) and left == pytest.approx(40.0)
    rate, left = meter.update(30, at=120.0)                    # 30 units in 20 s
    assert rate == pytest.approx(1.5) and left == pytest.approx(20 / 1.5)
    assert meter.update(50, at=125.0)[1] == 0.0


def test_the_meter_reads_its_clock_when_no_time_is_given():
    ticks = iter([10.0, 12.0])
    meter = Meter(total=8, clock=lambda: next(ticks))
    meter.update(0)
    assert meter.update(4) == (2.0, 2.0)


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00"), (5, "0:05"), (65, "1:05"), (59.6, "1:00"), (3599, "59:59"), (3600, "1:00:00"),
    (3723, "1:02:03"), (36000, "10:00:00"), (90061, "25:01:01"), (-5, "-0:05"),
    (None, "–"), ("soon", "–"), (float("nan"), "–"), (float("inf"), "–"),
])
def test_duration_formatter(seconds, text):
    assert fmt_duration(seconds) == text


def test_duration_formatter_unknown_text():
    assert fmt_duration(None, unknown="?") == "?" and fmt_duration(61, unknown="?") == "1:01"
