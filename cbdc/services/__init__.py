"""Use cases. Each public function is one unit of work: it opens the transaction, locks what it
changes in a fixed order (via :mod:`cbdc.storage.journal`), and commits once."""
