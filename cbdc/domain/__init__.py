"""The pure domain core: money, errors, postings, tiers, signing.

Imports no SQLAlchemy and no FastAPI."""
