"""``python -m fer_core rollback [--feedback-db DB] [--api-key KEY] [--json]``: return every
API instance to the model active before the last promotion (see :mod:`fer_core.promotion`)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from fer_core.commands.promote import add_store_args
    p = sub.add_parser("rollback", help="return to the model active before the last promotion")
    add_store_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core import promotion
    from fer_core.cli import emit
    from fer_core.commands.promote import open_store

    _, store = open_store(args)
    try:
        out = promotion.rollback(store, who=args.who)
    finally:
        store.close()
    emit(args, out, f"rolled back to {out['model_id'] or 'each instance FER_MODEL'} (pointer "
                    f"version {out['version']}; was {out['previous_model_id']})")
    return 0
