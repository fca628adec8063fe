import sys

from pretrainkit.cli.main import main

sys.exit(main())
