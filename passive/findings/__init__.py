"""Findings: the domain model (model.py), the kinds declared once (kinds.py) in the vocabulary of schema.py."""
