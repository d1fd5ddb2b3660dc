"""Coverage-guided fuzzing of leakscope's parsers (atheris), capture corruption and resource floods."""
