"""``python -m fer_core promote RUN [--feedback-db DB] [--api-key KEY] [--json]``.

Makes RUN the active model of every ``serve`` instance on the store (they follow within
``FER_MODEL_POLL_S``); see :mod:`fer_core.promotion`. A candidate that scored worse than the
current model is promoted with a warning. When ``FER_API_KEY`` is set, ``--api-key`` must
match it (as for the API's promotion and feedback export).
"""

from __future__ import annotations

import sys

from fer_core.resolve import configured_model


def add_store_args(p) -> None:
    p.add_argument("--feedback-db", default=None,
                   help="SQLite file or postgresql+psycopg:// URL (default FER_FEEDBACK_DB or "
                        "data/feedback.sqlite3)")
    p.add_argument("--api-key", default=None,
                   help="required when FER_API_KEY is set: the same key")
    p.add_argument("--who", default=None, help="recorded in the history (default: user name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_parser(sub) -> None:
    p = sub.add_parser("promote", help="make a run the active model of every API instance")
    p.add_argument("run", help="run id or run directory")
    add_store_args(p)
    p.set_defaults(func=run)


def open_store(args):
    """(settings, store) after the API-key check; FerError when the key is missing/wrong."""
    import secrets

    from fer_core.api.feedback_store import FeedbackStore
    from fer_core.api.settings import Settings
    from fer_core.errors import FerError

    settings = Settings.from_env()
    if settings.api_key is not None:
        given = args.api_key or ""
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise FerError("FER_API_KEY is set: pass the same key with --api-key to promote "
                           "or roll back", where="--api-key", status=401)
    store = FeedbackStore(args.feedback_db or settings.feedback_db)
    return settings, store


def run(args) -> int:
    from fer_core import promotion
    from fer_core.cli import emit

    settings, store = open_store(args)
    try:
        out = promotion.promote(store, args.run, who=args.who,
                                configured_model=configured_model(settings))
    finally:
        store.close()
    if out["warning"]:
        print(f"warning: {out['warning']}", file=sys.stderr)
    emit(args, out, f"promoted {out['model_id']} (sha256 {out['sha256'][:12]}..., pointer "
                    f"version {out['version']}; was {out['previous_model_id'] or 'FER_MODEL'})")
    return 0
