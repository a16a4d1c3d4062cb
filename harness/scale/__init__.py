"""`harness scale`: a whole batch through a server, surviving OOMs, verified exactly once.

The public API; docs/architecture.md maps the modules behind it (one concern each).
"""

from harness.scale.config import MODES, ScaleConfig, ScaleOutcome
from harness.scale.ladder import run_ladder
from harness.scale.run import resume_scale, run_scale

__all__ = ["MODES", "ScaleConfig", "ScaleOutcome", "resume_scale", "run_ladder", "run_scale"]
