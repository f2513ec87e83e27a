"""The HTTP server of ``loglake serve``: the API (app.py) and the streams it runs (runtime.py)."""
