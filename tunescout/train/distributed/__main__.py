"""``python -m tunescout.train.distributed SPEC``: one rank of a run :func:`spawn_trial` started.

Not for direct use: torchrun runs it on every rank with the spec file spawn_trial wrote.
"""

import sys

from tunescout.train.distributed.spawn import run_spawned_rank

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tunescout.train.distributed SPEC_JSON (started by spawn_trial)")
    sys.exit(run_spawned_rank(sys.argv[1]))
