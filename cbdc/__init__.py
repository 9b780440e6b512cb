"""cbdc: a digital-yuan style central bank digital currency.

Layers, arrows pointing one way: ``api``/``cli``/``simulation`` call ``services``; services use
``domain`` (pure rules) and ``storage`` (the one SQLAlchemy adapter).
"""

__version__ = "0.1.0"
