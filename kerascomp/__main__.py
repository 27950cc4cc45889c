"""``python -m kerascomp`` runs the CLI."""

import sys

from kerascomp.cli import main

sys.exit(main())
