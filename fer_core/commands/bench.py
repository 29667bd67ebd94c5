"""``python -m fer_core bench {data,train,evaluate,predict,api}``: measured, never asserted."""

from __future__ import annotations

from fer_core.bench import TARGETS
from fer_core.cli import plugins


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (timings on this machine)")
    targets = p.add_subparsers(dest="target", required=True)
    for name, module in plugins("fer_core.bench", TARGETS):
        t = targets.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]
                               if module.__doc__ else None)
        t.add_argument("--json", action="store_true", help="machine-readable output")
        module.add_arguments(t)
        t.set_defaults(func=_runner(module))


def _runner(module):
    def run(args) -> int:
        from fer_core.cli import emit
        result = module.run(args)
        emit(args, result, "\n".join(_lines(result)))
        return 0
    return run


def _lines(result: dict, indent: str = "") -> list[str]:
    """Nested benchmark results as an indented, readable listing."""
    out = []
    for key, value in result.items():
        if isinstance(value, dict):
            out.append(f"{indent}{key}:")
            out += _lines(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out.append(f"{indent}{key}:")
            for row in value:
                out.append(indent + "  - " + ", ".join(f"{k}={v}" for k, v in row.items()))
        elif isinstance(value, str) and "\n" in value:   # a table: its lines as they are
            out.append(f"{indent}{key}:")
            out += [indent + "  " + line for line in value.splitlines()]
        else:
            out.append(f"{indent}{key:28s} {value}")
    return out
