"""`python -m harness.locust`: Locust's --help including the harness options.

Locust prints --help before it loads locustfiles (locust issue #2917), so `locust -f scenarios/
--help` cannot show options that locustfiles add.
"""

from locust.argument_parser import get_parser

import harness.locust.lifecycle  # noqa: F401 - registers the options

parser = get_parser()
parser.prog = "locust"
parser.print_help()
