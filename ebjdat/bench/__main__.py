"""``python -m ebjdat.bench [suite] [--device D] [--quick] [--json F] [--profile DIR]``."""
import sys

from .cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
