"""Reproducible pilot simulations: a scenario (:mod:`.scenario`) driven deterministically
(:mod:`.driver`) through the services or the HTTP API (:mod:`.ports`, :mod:`.inprocess`),
measured in aggregates (:mod:`.metrics`) and reported as charts, HTML and JSON (:mod:`.report`).
`cbdc simulate` (:mod:`.command`) runs it all; :func:`.runner.simulate` is the same in Python."""
