import sys

from ecar_health.health_check import main

sys.exit(main())
