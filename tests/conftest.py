"""Make the stand-alone helpers in ``scripts/`` importable from tests (e.g. ``from fake_openai import ...``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
