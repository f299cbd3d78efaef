import sys

from smoothviz.cli import main

sys.exit(main())
