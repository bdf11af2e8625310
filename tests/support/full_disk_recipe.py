"""The fastText recipe on a disk that refuses writes once the export starts:
``RLIMIT_FSIZE`` (a real kernel limit: writes past it fail with EFBIG) is
set right before ``export_version`` runs, so training and checkpoints work
and the SavedModel cannot be written. Same argv as trainer.recipes.fasttext."""

from __future__ import annotations

import resource
import signal
import sys

# Smaller than the SavedModel's files, larger than the job's log.
WRITE_LIMIT_BYTES = 16 * 1024


def main() -> int:
    import trainer.recipes.export as export
    from trainer.recipes import fasttext

    export_version = export.export_version

    def export_on_a_full_disk(*args, **kwargs):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT_BYTES, WRITE_LIMIT_BYTES))
        return export_version(*args, **kwargs)

    export.export_version = export_on_a_full_disk
    return fasttext.main()


if __name__ == "__main__":
    sys.exit(main())
