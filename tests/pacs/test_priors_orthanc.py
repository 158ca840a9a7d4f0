"""Prior studies against a real Orthanc (its own, so that we know all it holds): two studies of one patient on
different dates, a homonym (same name and birth date, another Patient ID from the same issuer) and a study of
the same name and birth date from another issuer.  Opening the newer lists exactly the older as a prior; the
other issuer's study is only "to confirm"; the homonym is never offered."""

from __future__ import annotations

from pathlib import Path

import pytest

from mifaslab.orthanc import OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE, part10
from tests.pacs.patients import orthanc_holding, patient_study
from viewer.library import Library
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.resume import ResilientClient
from viewer.pacs.retry import RetryPolicy
from viewer.reading.priors import Patient, Source, find_priors

pytestmark = [pytest.mark.network]

NAME, BIRTH = "Prior^Patricia", "19500101"


@pytest.fixture(scope="module")
def priors_pacs(tmp_path_factory):
    def study(patient_id: str, issuer: str, date: str, seed: int) -> list:
        return patient_study(patient_id, issuer, date, name=NAME, birth=BIRTH, seed=seed)

    with orthanc_holding(tmp_path_factory.mktemp("priors-orthanc"), {
        "newer": study("PRI-1", "HOSP-A", "20240601", 100),
        "older": study("PRI-1", "HOSP-A", "20200101", 200),
        "homonym": study("PRI-2", "HOSP-A", "20220101", 300),
        "other_issuer": study("B-0042", "HOSP-B", "20210101", 400),
    }) as server:
        yield server


def source(server: OrthancProcess, via: str = "get") -> Source:
    node = server.node(calling_ae=CALLING_AE, timeouts=Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20))
    profile = ClusterProfile.of_node(node, via)
    return Source("PACS orthanc", lambda: ResilientClient(profile), audit_as=profile)


@pytest.mark.parametrize("via", ["get", "wado"])
def test_opening_the_newer_lists_exactly_the_older(priors_pacs, tmp_path: Path, via: str) -> None:
    with Library.open(tmp_path / "lib") as library:
        for ds in priors_pacs.datasets["newer"]:
            library.store_bytes(part10(ds))
        newer = priors_pacs.studies["newer"]
        record = library.study(newer)
        result = find_priors(newer, Patient.of_record(record), library, [source(priors_pacs, via)])
    assert [(p.study_uid, p.study_date, p.local, p.sources) for p in result.priors] == [
        (priors_pacs.studies["older"], "20200101", False, ("PACS orthanc",))]
    assert [p.study_uid for p in result.to_confirm] == [priors_pacs.studies["other_issuer"]]
    assert result.to_confirm[0].patient.issuer == "HOSP-B"
    assert priors_pacs.studies["homonym"] not in {p.study_uid for p in result.priors + result.to_confirm}
    assert result.notes == [] and not result.truncated
    assert result.priors[0].modalities == ("CT",)


def test_a_prior_held_locally_and_on_the_pacs_is_one_row(priors_pacs, tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        for key in ("newer", "older"):
            for ds in priors_pacs.datasets[key]:
                library.store_bytes(part10(ds))
        record = library.study(priors_pacs.studies["newer"])
        gone = Node(name="gone", ae_title="NOBODY", host="127.0.0.1", port=free_port(), calling_ae=CALLING_AE,
                    timeouts=Timeouts(connect_s=0.5, acse_s=1, dimse_s=1, network_s=1))  # nothing listens there
        unreachable = ClusterProfile.of_node(gone, "get", retry=RetryPolicy(budget_s=0.5))
        result = find_priors(record.study_uid, Patient.of_record(record), library,
                             [source(priors_pacs), Source("PACS gone", lambda: ResilientClient(unreachable))])
    assert [(p.study_uid, p.local, p.where) for p in result.priors] == [
        (priors_pacs.studies["older"], True, "library, PACS orthanc")]
    assert result.notes == ["PACS gone: not reachable."]
