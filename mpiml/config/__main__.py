"""``python -m mpiml.config``: print the configuration reference (docs/configuration.md)."""

import sys

from .reference import reference_markdown

sys.stdout.write(reference_markdown())
