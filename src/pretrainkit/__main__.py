import sys

from pretrainkit.cli.entry import run

sys.exit(run())
