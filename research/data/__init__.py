"""Text corpora (corpora.py), token datasets (pipeline.py) and batch streams (stream.py).

Import the submodules directly; this package imports nothing so that `research.data.stream` stays light.
"""
