"""The embedded toy world: procedural data (``shapes``, ``faces``), tiny models in standard formats, training.

Shipped weights live in ``common/toy/models/<name>/``; ``python -m common.toy train <model>`` rebuilds them.
"""
