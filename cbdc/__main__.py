"""``python -m cbdc``: the same command line as ``cbdc``."""

from cbdc.cli import app

if __name__ == "__main__":
    app()
