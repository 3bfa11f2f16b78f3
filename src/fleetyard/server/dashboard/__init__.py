"""The web dashboard: server-rendered HTML pages under ``/ui`` (routes in
:mod:`fleetyard.server.routers.dashboard`), behind the same tokens as the API.

No template engine and no JavaScript framework: pages are built from escaped strings
(:mod:`.html`); charts are plotly figures whose JavaScript the server serves from the plotly
package itself, so the pages work with no network.
"""
