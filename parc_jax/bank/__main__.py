"""``python -m parc_jax.bank``: see :mod:`parc_jax.bank.cli`."""

import sys

from parc_jax.bank.cli import main

sys.exit(main())
