"""Motion control for SVD: regions (motion brush), camera paths, keyframes/loops and trajectories.

Pure parts (`masks`, `trajectories`, `camera`) know nothing of models; the patches (`brush`,
`layout`, `keyframes`, `sgi2v`) register on a MODEL through its patch points (docs/ARCHITECTURE.md,
"MODEL"); `nodes` holds the node classes.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402,F401
