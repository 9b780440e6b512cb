"""The HTTP API of cbdc: routes and request/response schemas over the services, nothing more.

``create_app`` in :mod:`api.app` builds the FastAPI application; ``cbdc serve`` runs it.
"""
