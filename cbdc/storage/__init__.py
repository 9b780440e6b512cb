"""The one storage adapter: SQLAlchemy Core tables, engine set-up per dialect, and the ledger's
posting path. Nothing outside ``cbdc.storage`` and ``cbdc.services`` imports SQLAlchemy."""
