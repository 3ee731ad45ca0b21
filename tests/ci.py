"""Whether this run is CI's (`CI=true`, as `.ci/run` sets it).

In CI, tests whose requirements are missing fail instead of skipping, and the
randomised tests (hypothesis, schemathesis) run with fixed seeds: a red CI is
then always reproducible. Runs outside CI keep exploring new inputs.
"""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
