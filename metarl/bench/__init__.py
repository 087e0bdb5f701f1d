"""Benchmarks behind ``metarl bench <name>``: each module has ``add_arguments(parser)`` and
``run(args) -> dict``, and compares metarl against its anchors in one run (design §7)."""

__all__: list[str] = []
