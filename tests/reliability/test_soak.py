"""Soak: mixed Classify / ClassifyBatch / ListLabels load against the secured
stack (``labeler serve`` and ``labeler-modelserver`` as real processes, TLS,
mutual TLS and a bearer token) for ``--soak-seconds`` (20 s by default;
``make soak`` runs 300 s). No call may fail, and the Labeler's memory (RSS)
and open file descriptors must not keep growing: the last third of the run
is compared with the first, with generous margins and no timing asserts.
The figures go to stdout (``-s``) and docs/reliability.md."""

from __future__ import annotations

import statistics
import time

import pytest

from tests.support.procs import Load, fd_count, rss_bytes

pytestmark = pytest.mark.timeout(1200)  # covers make soak's 300 s and more

MIB = 1024 * 1024
WARM_UP_S = 3.0  # caches, the allocator and the channels settle first
SAMPLE_EVERY_S = 0.5


def test_mixed_load_holds_with_no_errors_and_no_leaks(secure_stack, soak_seconds):
    labeler, modelserver = secure_stack.labeler.pid, secure_stack.modelserver.pid
    samples: list[
        tuple[float, int, int, int, int]
    ] = []  # (t, calls, labeler rss, labeler fds, modelserver fds)
    with secure_stack.labeler_channel() as channel:
        load = Load(channel, workers=4, seed=7).start()
        try:
            time.sleep(WARM_UP_S)
            start = time.monotonic()
            while (now := time.monotonic()) - start < soak_seconds:
                samples.append(
                    (now - start, load.total, rss_bytes(labeler), fd_count(labeler), fd_count(modelserver))
                )
                time.sleep(SAMPLE_EVERY_S)
        finally:
            load.stop()
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    calls = samples[-1][1] - samples[0][1]
    rss_first = statistics.mean(s[2] for s in first)
    rss_last = statistics.mean(s[2] for s in last)
    print(
        f"\nsoak: {soak_seconds:.0f}s, {calls} calls measured ({sum(load.outcomes.values())} in all, "
        f"{calls / soak_seconds:.0f}/s), outcomes {dict(load.outcomes)}, partial answers {load.partial}\n"
        f"labeler rss first third {rss_first / MIB:.1f} MiB, last third {rss_last / MIB:.1f} MiB, "
        f"peak {max(s[2] for s in samples) / MIB:.1f} MiB\n"
        f"labeler fds {min(s[3] for s in samples)}..{max(s[3] for s in samples)}, "
        f"model server fds {min(s[4] for s in samples)}..{max(s[4] for s in samples)}"
    )
    assert set(load.outcomes) == {"OK"}, load.failures[:5]
    assert load.partial == 0, dict(load.failed_labels)
    assert calls >= 50, "the load generator barely ran"
    # Memory may settle, not climb: 20% plus 24 MiB of slack for allocator noise.
    assert rss_last <= rss_first * 1.2 + 24 * MIB, (rss_first / MIB, rss_last / MIB)
    # File descriptors: no connection, file or pipe is left open per call.
    assert max(s[3] for s in last) <= max(s[3] for s in first) + 4
    assert max(s[4] for s in last) <= max(s[4] for s in first) + 4
