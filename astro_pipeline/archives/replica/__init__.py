"""A faithful local replica of MAST, HLA and ESA/Hubble, served on 127.0.0.1.

One FastAPI app with one router per archive (``mast.py``, ``hla.py``, ``esahubble.py``),
serving the built-in sample (``astro_pipeline.sample``). Fault injection (``faults.py``)
is selected by URL pattern and deterministic for a seed.
"""

from astro_pipeline.archives.replica.app import ReplicaState, create_app
from astro_pipeline.archives.replica.server import ReplicaServer

__all__ = ["ReplicaServer", "ReplicaState", "create_app"]
