"""The web console of ``loglake serve``: pages at ``/console`` and the JSON APIs they call.

Pages (one module each, registered in ``web.py``; what they share is in ``context.py``):
Explore (explore.py), Live dashboards (dashboards.py), Notebooks (notebooks.py) and Catalog
(catalog.py). Their SQL runs through one :class:`~loglake.server.console.pool.SqlPool` of sandboxed
query workers, the same sandbox as ``loglake query``. The browser code is plain JavaScript modules
and CSS in ``static/`` (no build step); chart drawing comes from the installed ``uplot-python``
package, never from a CDN.
"""
