"""Training, export and evaluation of the default model (the optional ``train`` extra).

Nothing in the runtime imports this package: it needs torch and transformers.
"""
