"""``python -m diagnose ...``: the same commands as ``diagnose ...``."""

from diagnose.cli.app import main

main()
