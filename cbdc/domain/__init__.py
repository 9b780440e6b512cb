"""The pure domain core: money, errors, postings, tiers, signing, signed messages, keys, receipts
and QR payloads.

Imports no SQLAlchemy and no FastAPI, reads no clock and draws no randomness."""
