"""vidgraph: a node-graph workflow engine for video diffusion."""
__version__ = "0.1.0"
