"""Training code for the embedded models: run from a checkout, never installed with the package."""
