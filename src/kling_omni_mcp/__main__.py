import sys

from kling_omni_mcp.cli import main

sys.exit(main())
