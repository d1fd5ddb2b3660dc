"""``python -m passive``: the ``leakscope`` command line."""

from passive.cli.main import main

main(prog_name="leakscope")
