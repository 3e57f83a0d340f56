"""The try-it page at `/playground`: a static page that talks to the job API with the visitor's own key.

Everything it needs ships in this package (no CDN, no build step). The page itself needs no key:
it asks for one and sends it in the `X-API-Key` header of its own API requests only.
"""

from capability_service.playground.routes import router

__all__ = ["router"]
