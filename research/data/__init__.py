"""Text corpora (corpora.py), token datasets (pipeline.py), batch streams (stream.py) and synthetic
length-generalisation tasks (tasks.py).

Import the submodules directly; this package imports nothing so that `research.data.stream` stays light.
"""
