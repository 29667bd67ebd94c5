"""The feedback store on a real PostgreSQL server (throwaway cluster from tests/conftest.py)."""

from __future__ import annotations

import threading

import numpy as np

from fer_core.labels import FER7


def test_pg_store_matches_sqlite_export(pg_db, tmp_path):
    from fer_core.api.feedback_store import FeedbackStore
    pg, lite = FeedbackStore(pg_db), FeedbackStore(tmp_path / "fb.sqlite3")
    assert pg.kind == "postgresql" and pg.ping() and lite.kind == "sqlite"
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (8, 48, 48), dtype=np.uint8)

    def worker(t):
        for i in range(25):
            pg.add(faces[t], FER7[(t + i) % 7], note=f"{t}-{i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert pg.count() == 200
    # the same rows in id order into SQLite: identical export
    import sqlalchemy as sa

    from fer_core.api.feedback_store import feedback
    with pg.engine.connect() as c:
        rows = c.execute(sa.select(feedback.c.id, feedback.c.label, feedback.c.pixels)
                         .order_by(feedback.c.id)).all()
    assert len({r.id for r in rows}) == 200
    for r in rows:
        lite.add(np.frombuffer(r.pixels, np.uint8).reshape(48, 48), r.label)
    assert pg.export_csv() == lite.export_csv()
    assert pg.get(rows[0].id)["label"] == rows[0].label and pg.get(10**9) is None
    pg.close()
    lite.close()
