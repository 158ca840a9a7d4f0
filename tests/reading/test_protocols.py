"""Hanging protocols without Qt: the shipped protocols on generated studies in a real library, the overrides
(shipped < IT's system folder < the user's file), damaged files, and the rule format's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reading.hanging_studies import (
    Study,
    add_reading_object,
    add_series,
    brain_mr,
    chest_ct,
    chest_radiograph,
    mammography,
)
from viewer.reading.protocol_files import load_protocols, system_protocols_dir, user_protocols_path
from viewer.reading.protocols import FALLBACK_NAME, ProtocolError, choose, protocol_from_json
from viewer.reading.study_facts import gather


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the system folder's protocols/, the user's protocols.json), both empty, private to the test."""
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("MIFAS_CONFIG_DIR", str(tmp_path / "home"))
    assert system_protocols_dir() == tmp_path / "etc" / "protocols"
    return system_protocols_dir(), user_protocols_path()


def hang(library, study: Study, prior: Study | None = None, protocols=None):
    protocols = protocols if protocols is not None else load_protocols().protocols
    return choose(protocols, gather(library, study.uid), gather(library, prior.uid) if prior else None)


def uids(hanging, index: int) -> list[str | None]:
    return [p.series_uid if p else None for p in hanging.placements(index)]


def test_ct_chest_with_prior_hangs_lung_beside_the_priors_matching_series(library, folders) -> None:
    current, prior = chest_ct(library), chest_ct(library, z0=200.0, lung="Lung 1.25mm")
    hanging = hang(library, current, prior)
    assert hanging.protocol.name == "CT chest with prior" and hanging.count == 3
    lung = hanging.placements(0)
    assert uids(hanging, 0) == [current.series["lung"], prior.series["lung"]]
    assert [p.preset for p in lung] == ["CT lung", "CT lung"] and [p.study for p in lung] == ["current", "prior"]
    assert hanging.protocol.display_sets[0].layout == "1x2"
    assert uids(hanging, 1) == [current.series["mediastinum"], prior.series["mediastinum"]]
    assert {p.preset for p in hanging.placements(1)} == {"CT abdomen"}
    assert uids(hanging, 2) == [current.series["bone"], prior.series["bone"]]
    assert {p.preset for p in hanging.placements(2)} == {"CT bone"}
    assert hanging.label(0) == "CT chest with prior - 1/3 Lung"


def test_ct_chest_without_a_prior_takes_the_ct_chest_protocol(library, folders) -> None:
    current = chest_ct(library)
    hanging = hang(library, current)
    assert hanging.protocol.name == "CT chest"
    assert uids(hanging, 0) == [current.series["lung"], current.series["mediastinum"]]
    assert [p.preset for p in hanging.placements(0)] == ["CT lung", "CT abdomen"]


def test_the_study_description_matches_when_no_series_names_a_body_part(library, folders) -> None:
    study = Study()
    axial = add_series(library, study, "axial", "CT", "Axial 1mm", study_description="CT Thorax with contrast")
    hanging = hang(library, study)
    assert gather(library, study.uid).description == "CT Thorax with contrast"
    assert hanging.protocol.name == "CT chest" and uids(hanging, 0) == [axial, axial]


def test_an_image_already_hung_is_used_again_only_when_nothing_else_matches(library, folders) -> None:
    study = Study()
    lung = add_series(library, study, "lung", "CT", "Lung 1mm", body_part="CHEST")
    body = add_series(library, study, "body", "CT", "Body 5mm", body_part="CHEST")
    hanging = hang(library, study)
    assert hanging.protocol.name == "CT chest"
    assert uids(hanging, 0) == [lung, body]  # not the lung series twice, though it is the most alike
    only = Study()
    single = add_series(library, only, "lung", "CT", "Lung 1mm", body_part="CHEST")
    assert uids(hang(library, only), 0) == [single, single]  # the same series, in the other window


def test_reading_objects_and_localizers_are_never_hung(library, folders) -> None:
    current = chest_ct(library)
    facts = gather(library, current.uid)
    assert {i.series_uid for i in facts.images} == {current.series[n] for n in ("scout", "mediastinum", "lung",
                                                                               "bone")}
    # a study of nothing but reading objects has nothing to hang
    only_ko = Study()
    add_reading_object(library, only_ko, "ko", "KO")
    assert gather(library, only_ko.uid).images == ()


def test_mr_brain_hangs_t1_t2_flair_and_dwi_by_description(library, folders) -> None:
    study = brain_mr(library)
    hanging = hang(library, study)
    assert hanging.protocol.name == "MR brain" and hanging.protocol.display_sets[0].layout == "2x2"
    assert uids(hanging, 0) == [study.series[n] for n in ("t1", "t2", "flair", "dwi")]
    assert uids(hanging, 1) == [study.series["dwi"], study.series["adc"]]


def test_a_viewport_whose_rule_matches_nothing_stays_empty(library, folders) -> None:
    study = brain_mr(library, with_dwi=False)
    hanging = hang(library, study)
    assert uids(hanging, 0) == [study.series["t1"], study.series["t2"], study.series["flair"], None]


def test_chest_radiograph_hangs_pa_left_and_lateral_right_by_view_position(library, folders) -> None:
    study = chest_radiograph(library)
    hanging = hang(library, study)
    assert hanging.protocol.name == "Chest radiograph"
    left, right = hanging.placements(0)
    assert (left.instance_uid, right.instance_uid) == (study.instances["pa"], study.instances["lateral"])
    assert left.series_uid == right.series_uid == study.series["views"]
    assert left.preset is None and left.window is None  # a radiograph keeps its own window


def test_mammography_four_views_in_mirror_image(library, folders) -> None:
    study = mammography(library)
    hanging = hang(library, study)
    assert hanging.protocol.name == "Mammography four views"
    placements = hanging.placements(0)
    assert [p.instance_uid for p in placements] == [study.instances[v] for v in ("RCC", "LCC", "RMLO", "LMLO")]
    # every image has its chest wall on the left edge: the right breast's are mirrored so the two face each other
    assert [p.flip_h for p in placements] == [True, False, True, False]


def test_no_matching_protocol_falls_back_to_every_series_one_by_one(library, folders) -> None:
    study = Study()
    first = add_series(library, study, "a", "OT", "Scan A")
    second = add_series(library, study, "b", "OT", "Scan B")
    add_reading_object(library, study, "pr", "PR")
    hanging = hang(library, study)
    assert hanging.protocol.name == FALLBACK_NAME and hanging.count == 2
    assert [uids(hanging, i) for i in range(2)] == [[first], [second]]
    # with a prior: the prior's most similar series beside each
    prior = Study()
    add_series(library, prior, "b", "OT", "Scan B")
    add_series(library, prior, "a", "OT", "Scan A")
    hanging = hang(library, study, prior)
    assert [uids(hanging, i) for i in range(2)] == [[first, prior.series["a"]], [second, prior.series["b"]]]


def protocol_file(name: str, window: str, layout: str = "1x1") -> dict:
    return {"version": 1, "protocols": [{
        "name": name, "priority": 10, "match": {"modality": "CT", "body_part": "CHEST", "prior": True},
        "display_sets": [{"name": "Only", "layout": layout, "viewports": [
            {"series": {"modality": "CT", "description": "*medias*"}, "window": window}]}]}]}


def test_it_overrides_a_shipped_protocol_and_the_user_overrides_it(library, folders) -> None:
    system, user = folders
    current, prior = chest_ct(library), chest_ct(library)
    system.mkdir(parents=True)
    (system / "hospital.json").write_text(json.dumps(protocol_file("CT chest with prior", "CT bone")))
    protocols = load_protocols()
    assert protocols.warnings == () and protocols.get("CT chest with prior").origin == "system"
    hanging = hang(library, current, prior, protocols.protocols)
    assert hanging.count == 1 and uids(hanging, 0) == [current.series["mediastinum"]]
    assert hanging.placements(0)[0].preset == "CT bone"
    user.parent.mkdir(parents=True)
    # the user's name differs in case only: still the same protocol
    user.write_text(json.dumps(protocol_file("ct CHEST with prior", "CT brain", "1x2")))
    protocols = load_protocols()
    assert [p.origin for p in protocols.protocols if p.name.casefold() == "ct chest with prior"] == ["user"]
    hanging = hang(library, current, prior, protocols.protocols)
    assert hanging.protocol.display_sets[0].layout == "1x2" and hanging.placements(0)[0].preset == "CT brain"


def test_a_damaged_file_is_a_sentence_and_the_shipped_protocols_still_work(library, folders) -> None:
    system, user = folders
    system.mkdir(parents=True)
    (system / "a-broken.json").write_text("{ this is not JSON")
    good = protocol_file("Our CT", "CT lung")
    good["protocols"].insert(0, {"name": "Bad one", "display_sets": [{"layout": "3x3", "viewports": []}]})
    (system / "b-partly.json").write_text(json.dumps(good))
    user.parent.mkdir(parents=True)
    user.write_text("[" * 100 + "]" * 100)  # deeper than the JSON limit
    protocols = load_protocols()
    assert len(protocols.warnings) == 3
    broken, bad, deep = protocols.warnings
    assert "a-broken.json" in broken and "not valid JSON" in broken and broken.endswith(".")
    assert "'Bad one'" in bad and "layout" in bad and "b-partly.json" in bad
    assert str(user) in deep
    assert protocols.get("Our CT") is not None and protocols.get("CT chest") is not None
    study = brain_mr(library)
    assert hang(library, study, protocols=protocols.protocols).protocol.name == "MR brain"


@pytest.mark.parametrize(("entry", "words"), [
    ({"name": "X", "display_sets": [{"layout": "1x1", "viewports": [{"window": "CT liver"}]}]}, "not a preset"),
    ({"name": "X", "display_sets": [{"layout": "1x2", "viewports": [{}, {}, {}]}]}, "1 to 2 viewports"),
    ({"name": "X", "display_sets": [{"viewports": [{"like": 1}]}]}, "earlier viewport"),
    ({"name": "X", "display_sets": [{"viewports": [{"study": "older"}]}]}, "\"current\" or \"prior\""),
    ({"name": "X", "display_sets": [{"viewports": [{"window": {"center": 40, "width": -1}}]}]}, "positive"),
    ({"name": "X", "display_sets": [{"viewports": [{"series": {"colour": "red"}}]}]}, "unknown key 'colour'"),
    ({"display_sets": []}, "needs a 'name'"),
])
def test_a_wrong_rule_is_refused_with_a_sentence_naming_it(entry, words) -> None:
    with pytest.raises(ProtocolError, match=None) as caught:
        protocol_from_json(entry)
    assert words in str(caught.value)


@pytest.mark.parametrize(("doc", "heading"), [("user-guide.md", "### Hanging protocols"),
                                              ("admin-guide.md", "## Hanging protocols")])
def test_the_documented_examples_are_valid_rules(doc, heading) -> None:
    text = (Path(__file__).parents[2] / "docs" / doc).read_text(encoding="utf-8")
    section = text[text.index(heading + "\n"):]
    example = section[section.index("```json\n") + 8: section.index("\n```", section.index("```json\n"))]
    protocols = [protocol_from_json(entry) for entry in json.loads(example)["protocols"]]
    assert protocols and all(p.display_sets for p in protocols)
