"""Repository tools: packaging the bundle (``package_bundle.py``) and the repository's paths (``paths.py``)."""
