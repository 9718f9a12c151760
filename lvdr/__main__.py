"""``python -m lvdr``, the way the pipeline runs every stage (lvdr.cli).

Once a command has finished, its outputs renamed into place and its log flushed, the process leaves
with ``os._exit``: the interpreter's usual shutdown, with torch and MONAI loaded, took 1.8 s here,
longer than some stages' own work, for each of the demo's 37 jobs. For the same reason the process
skips the packages MONAI would import for nothing (lvdr.cli.skip_unused_imports).
"""

import logging
import os
import sys

from lvdr.cli import main

code = main(own_process=True)
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
