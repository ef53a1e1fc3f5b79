"""vidgraph: a node-graph workflow engine for video diffusion."""
from pathlib import Path

__version__ = "0.1.0"


def data_path(name: str) -> Path:
    """The bundled data folder `name` ("web", "workflows").

    Installed from a wheel they sit inside this package; in a checkout (an editable install)
    they are the repository's top-level folders beside this one.
    """
    here = Path(__file__).resolve().parent
    installed = here / name
    return installed if installed.is_dir() else here.parent / name
