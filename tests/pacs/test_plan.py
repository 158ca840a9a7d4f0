"""The engine's planning queries against the session's Orthanc: what they ask, and what the plan holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.pacs.conftest import Seed
from viewer.library import Library
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.node import Node
from viewer.pacs.query import query_identifier
from viewer.pacs.resume import ResilientClient
from viewer.pacs.retrieve import plan_study, retrieve

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Recording:
    """The real client's find, with what each query asked for kept."""

    def __init__(self, client: ResilientClient) -> None:
        self.client = client
        self.queries: list[tuple[str, dict[str, str]]] = []

    def __call__(self, level: str, keys: dict[str, str], **kwargs: Any) -> Any:
        self.queries.append((level, dict(keys)))
        return self.client.find(level, keys, **kwargs)


def test_the_study_s_sop_classes_spare_the_listing_its_per_instance_class(node: Node, seed_data: Seed) -> None:
    # Orthanc 1.10 answers an IMAGE-level SOP Class UID by reading every instance from its storage
    find = Recording(ResilientClient(ClusterProfile.of_node(node, "get")))
    plans = plan_study(find, seed_data.ct_study, None, None, frozenset({CT_IMAGE_STORAGE}))
    assert [len(p.ordered) for p in plans] == [31] and plans[0].sop_class_uids == {CT_IMAGE_STORAGE}
    asked = [query_identifier(level, keys) for level, keys in find.queries if level == "image"]  # as sent
    assert asked and all("SOPClassUID" not in identifier for identifier in asked)


def test_without_them_the_listing_asks_each_instance_s_class(node: Node, seed_data: Seed) -> None:
    find = Recording(ResilientClient(ClusterProfile.of_node(node, "get")))
    plans = plan_study(find, seed_data.ct_study, None, None)
    assert plans[0].sop_class_uids == {CT_IMAGE_STORAGE}
    assert all("SOPClassUID" in query_identifier(level, keys) for level, keys in find.queries if level == "image")


def test_the_engine_plans_with_the_study_s_sop_classes(node: Node, seed_data: Seed, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    queries: list[tuple[str, dict[str, str]]] = []
    real = ResilientClient.find

    def recording(self: ResilientClient, level: str, keys: dict[str, str], **kwargs: Any) -> Any:
        queries.append((level, dict(keys)))
        return real(self, level, keys, **kwargs)

    monkeypatch.setattr(ResilientClient, "find", recording)  # the engine's own client: the queries it sends
    with Library.open(tmp_path / "lib") as library:
        assert retrieve(ClusterProfile.of_node(node, "get"), seed_data.ct_study, library=library).complete
    levels = [level for level, _ in queries]
    assert levels[0] == "study" and "SOPClassesInStudy" in queries[0][1]
    assert "image" in levels and all(
        "SOPClassUID" not in query_identifier(level, keys) for level, keys in queries if level == "image")
