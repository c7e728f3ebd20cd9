"""Local question answering over a folder of notes: core library.

Nothing happens at import time; build components from a :class:`rag.settings.Settings`.
"""

__version__ = "0.1.0"
