"""Where the checkout, the contract vectors and the test artifacts are."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the contract vectors live in shared/, beside the checkout
VECTORS = Path(os.environ.get("CRM_VECTORS_DIR", ROOT.parent / "shared" / "vectors"))
ARTIFACTS = ROOT / "test-artifacts"
