import sys

from fer_core.native_logs import quiet_tensorflow_startup

quiet_tensorflow_startup()  # before any command imports TensorFlow: stderr keeps only what matters

from fer_core.cli import main  # noqa: E402

sys.exit(main())
