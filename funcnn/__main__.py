import sys

from funcnn.cli import main

if __name__ == "__main__":  # not when a worker process (funcnn check --jobs) imports the parent's main module
    sys.exit(main())
