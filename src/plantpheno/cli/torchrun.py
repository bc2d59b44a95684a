"""``python -m plantpheno.cli.torchrun ARGS``: PyTorch's own launcher (``torchrun ARGS``), run in this process, whose
job failure ends in the workers' messages and their exit status instead of the launcher's traceback.

``torchrun`` ends a job with a failed worker by raising ``ChildFailedError`` out of its ``main``, so even a refusal
that every rank has already explained in one line (exit status 2) ends in a page of launcher traceback.
``plantpheno train --nproc N`` launches through this module instead: the launch, the rendezvous and the workers
are torchrun's, unchanged (its ``parse_args`` and ``run``); only the way a failure is shown differs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        if codes == {2}:  # every failed rank printed its one-line error (the CLI's exit status for a bad input)
            return 2
        # anything else: the launcher's own summary of which rank failed how, without its traceback
        print(f"plantpheno: the torchrun job failed:\n{exc}", file=sys.stderr)
        return max((code for code in codes if code > 0), default=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
