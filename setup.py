"""Builds the optional compiled packet scanner (passive/capture/_scan.c); everything else is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler, no Python headers) the install goes on
without it and leakscope uses the pure-Python scanner, saying so once per run.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "passive.capture._cscan",
            sources=["passive/capture/_scan.c"],
            optional=True,
        )
    ]
)
