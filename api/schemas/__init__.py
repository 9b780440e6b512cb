"""Request and response schemas of the API (pydantic v2). Requests forbid unknown fields and
refuse coercion (``"100"`` or ``100.0`` are not amounts); every request model has an example."""
