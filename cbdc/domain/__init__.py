"""The pure domain core: money, errors, postings, tiers, signing. Imports no SQLAlchemy or FastAPI."""
