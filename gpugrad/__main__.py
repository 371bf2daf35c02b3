"""``python -m gpugrad ...`` runs the ``gpugrad`` command."""
import sys

from .cli import main

sys.exit(main())
