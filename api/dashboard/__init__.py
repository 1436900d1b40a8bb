"""The web dashboard: server-rendered pages on the same app as the JSON API.

Pages read through the broker operations and the JSON API's own converters; every change
a person makes (sign up, pair, send, cancel, revoke, request limits) is a ``fetch`` from
``static/app.js`` to the JSON API with the session cookie and the CSRF token, so there is
one code path for every rule. Every asset is served by the app (no CDN).
"""

from api.dashboard.pages import dashboard_router, page_or_json_error, template_config

__all__ = ["dashboard_router", "page_or_json_error", "template_config"]
