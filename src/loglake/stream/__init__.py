"""The durable stream between parsing and consumers: ``local.py`` is the embedded on-disk log."""
