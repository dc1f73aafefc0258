"""``python -m inferpack``: the CLI run by this interpreter (how the local fleet starts
its servers, so they use the same environment as the command that started them)."""

from inferpack.cli import main

main()
