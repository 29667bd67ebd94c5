"""``python -m fer_core serve [--host --port --model --workers]``: the REST API on uvicorn."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import tempfile

from fer_core.resolve import add_model_argument

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc mallopt parameters
MMAP_THRESHOLD = 256 * 2**10  # see tune_malloc


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the REST API (OpenAPI + Swagger UI at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_model_argument(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--feedback-db", default=None,
                   help="SQLite file or postgresql+psycopg://user@host:port/db URL "
                        "(default FER_FEEDBACK_DB or data/feedback.sqlite3)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core.errors import FerError

    if not 0 < args.port < 65536:
        raise FerError(f"expected a port in 1..65535, got {args.port}", where="--port")
    if args.workers < 1:
        raise FerError(f"expected at least 1, got {args.workers}", where="--workers")
    from fer_core.settings import get_settings
    settings = getattr(args, "settings", None) or get_settings()  # bad FER_* values: exit 2
    changes = {}
    if args.model:  # a path made absolute for the workers; a run id (or a bad name) as given:
        path = os.path.abspath(os.path.expanduser(args.model))  # the API resolves it and says
        changes["model"] = path if os.path.exists(path) else args.model  # what is wrong
    if args.feedback_db:
        changes["feedback_db"] = args.feedback_db if "://" in args.feedback_db else \
            os.path.abspath(os.path.expanduser(args.feedback_db))
    if changes:
        try:
            settings = settings.with_(**changes)
        except FerError as e:  # name the option the value came from
            flags = {"FER_MODEL": "--model", "FER_FEEDBACK_DB": "--feedback-db"}
            raise FerError(str(e).split(": ", 1)[-1], where=flags.get(e.where, e.where)) from None
    made_dirs = []
    if args.workers > 1 and settings.decode_budget_dir is None:  # one pixel budget, N workers
        made_dirs.append(tempfile.mkdtemp(prefix="fer-decode-budget-"))
        settings = settings.with_(decode_budget_dir=made_dirs[-1])
    if args.workers > 1:  # one set of Prometheus series, whichever worker answers /metrics
        from fer_core.settings import export_metrics_dir
        made_dirs.append(tempfile.mkdtemp(prefix="fer-metrics-"))
        export_metrics_dir(made_dirs[-1])
    try:
        return _serve(args, settings)
    finally:
        for d in made_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _serve(args, settings) -> int:
    import uvicorn

    from fer_core.api.feedback_store import check_store
    from fer_core.settings import export_env
    export_env(settings)  # every worker process (--workers N) rebuilds the same settings
    check_store(settings.feedback_db)  # a store that cannot be opened as configured: exit 2
    check_port(args.host, args.port)  # uvicorn would load the model first, then fail to bind
    tune_malloc()

    kwargs = dict(host=args.host, port=args.port, log_level=args.log_level,
                  timeout_graceful_shutdown=5)
    if args.workers > 1:
        uvicorn.run("fer_core.api.app:create_app", factory=True, workers=args.workers, **kwargs)
    else:
        from fer_core.api.app import create_app
        uvicorn.run(create_app(settings), **kwargs)
    return 0


def check_port(host: str, port: int) -> None:
    """FerError when ``host:port`` cannot be bound (in use, not allowed, unknown host).

    Binds and closes a socket with the options uvicorn uses (SO_REUSEADDR), so a port that only
    has connections in TIME_WAIT passes, as it would for the server.
    """
    from fer_core.errors import FerError

    where = f"--host {host} --port {port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise FerError(f"cannot resolve host ({e.strerror})", where=where) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FerError(f"port {port} is already in use; stop the other server or "
                               "choose another --port", where=where) from None
            raise FerError(f"cannot listen there ({e.strerror or e})", where=where) from None


def tune_malloc(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> None:
    """glibc malloc for a long-running server, in this process and the worker processes it
    starts (they read the environment as they start); an operator's own values are kept:

    * at most ``MALLOC_ARENA_MAX`` arenas (default 2): the API decodes images in a pool of
      threads, and with glibc's default (8 arenas per core) freed image buffers stay spread over
      many arenas. 3-minute ``bench soak`` side by side: end RSS 1654 MB (+29 % after the first
      minute) with the default, 1123 MB (+2.3 %) with 2 arenas.
    * blocks of ``MALLOC_MMAP_THRESHOLD_`` bytes or more (default 256 KB) always mapped on
      their own, and unmapped as soon as they are freed: photo-sized buffers (a 640x480 decode
      is 900 KB, its grey copy 300 KB), batch arrays and detector inputs, and Pillow's 16 MB
      decode blocks. glibc's own threshold starts at 128 KB but moves up to the largest mapped
      block freed (up to 32 MB), after which all of these land in the arenas, where every new
      peak of concurrent requests raises the arenas' high-water and freed holes stay in RSS.
      Fixing it also keeps the top-of-heap trim threshold at 128 KB. 10-minute ``bench soak``,
      4 MB vs 256 KB side by side, twice: RSS at the end 656 / 587 and 640 / 556 MB, 437 / 405
      and 486 / 414 MB after 12 s idle. Costs about 1 ms of server CPU per 640x480 photo
      (20-22 ms); see README, "Under pressure".

    Memory freed while serving goes back to the OS once the server is idle
    (:class:`fer_core.api.memory.IdleTrim`)."""
    from fer_core.settings import env_default
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, int(env_default("MALLOC_ARENA_MAX", str(arenas))))
        libc.mallopt(M_MMAP_THRESHOLD, int(env_default("MALLOC_MMAP_THRESHOLD_",
                                                       str(mmap_threshold))))
    except (OSError, AttributeError, ValueError):
        pass  # not glibc, or not a number: the allocator's defaults
