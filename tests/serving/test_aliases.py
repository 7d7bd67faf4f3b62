"""The live alias view behind /model/info: read when asked, cached for a few seconds, and a
registry that fails or does not answer is reported, never replaced by an older answer."""

from __future__ import annotations

import threading

from mlops_serving.aliases import LiveAliases, by_version


def test_aliases_are_read_again_after_the_cache_expires() -> None:
    registry = {"champion": "1", "challenger": "2"}
    reads = []

    def fetch() -> dict[str, str]:
        reads.append(1)
        return dict(registry)

    aliases = LiveAliases(fetch, cache_seconds=0.0)
    assert aliases.current() == ({"champion": "1", "challenger": "2"}, None)
    registry["challenger"] = "3"
    assert aliases.current() == ({"champion": "1", "challenger": "3"}, None)
    assert len(reads) == 2
    cached = LiveAliases(fetch, cache_seconds=3600.0)
    cached.current()
    registry["challenger"] = "4"
    assert cached.current()[0] == {"champion": "1", "challenger": "3"}  # within the cache


def test_a_failing_registry_is_reported_without_the_last_good_answer() -> None:
    failing = [False]

    def fetch() -> dict[str, str]:
        if failing[0]:
            raise ConnectionError("connection refused")
        return {"champion": "1"}

    aliases = LiveAliases(fetch, cache_seconds=0.0)
    assert aliases.current() == ({"champion": "1"}, None)
    failing[0] = True
    assert aliases.current() == (
        None, "cannot read the aliases from the model registry: connection refused"
    )  # fmt: skip


def test_a_registry_that_does_not_answer_is_reported_within_the_deadline() -> None:
    release = threading.Event()

    def fetch() -> dict[str, str]:
        release.wait(30)
        return {"champion": "1"}

    aliases = LiveAliases(fetch, cache_seconds=0.0, deadline_seconds=0.2)
    try:
        assert aliases.current() == (None, "the model registry did not answer within 0.2 s")
        assert aliases.current()[0] is None  # still the same read pending, not a second one
    finally:
        release.set()


def test_aliases_of_a_version() -> None:
    assert by_version({"champion": "1", "challenger": "2", "best": "1"}, "1") == [
        "best", "champion"
    ]  # fmt: skip
    assert by_version({"champion": "1"}, "2") == []
