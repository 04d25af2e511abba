"""natprobe's pure logic: RFC 5780 §4.3/§4.4 classification, timing, parsing, JSON."""

from __future__ import annotations

import itertools

import pytest

from lab.agents.natclass import (
    ADDRESS_AND_PORT_DEPENDENT,
    ADDRESS_DEPENDENT,
    BEHAVIOURS,
    ENDPOINT_INDEPENDENT,
    EXIT_CODES,
    FILTERING_II,
    TEST_I,
    Addr,
    ProbeResult,
    Step,
    anomalies,
    classify_filtering,
    classify_mapping,
    nat_present,
    parse_hostport,
    retransmit_schedule,
    transaction_timeout,
)

EIM = EIF = ENDPOINT_INDEPENDENT
ADM = ADF = ADDRESS_DEPENDENT
APDM = APDF = ADDRESS_AND_PORT_DEPENDENT

LOCAL: Addr = ("10.0.0.2", 40000)
M1: Addr = ("203.0.113.1", 40000)  # port preserved, other IP: a NAT
M1_OTHER_PORT: Addr = ("203.0.113.1", 50001)
M2_OTHER: Addr = ("203.0.113.1", 50002)
M3_OTHER: Addr = ("203.0.113.1", 50003)


def test_vocabulary_is_designs() -> None:
    assert BEHAVIOURS == (
        "endpoint-independent",
        "address-dependent",
        "address-and-port-dependent",
    )


# --- mapping (RFC 5780 §4.3) -----------------------------------------------------------------

# Every combination: test I in {-, local (no NAT), A}; II in {-, A, B}; III in {-, A, B, C},
# where A, B, C are distinct public addresses and "-" is no answer.
ADDRESSES: dict[str, Addr | None] = {
    "-": None,
    "local": LOCAL,
    "A": M1,
    "B": M2_OTHER,
    "C": M3_OTHER,
}
MAPPING_TABLE: dict[tuple[str, str, str], str | None] = {
    # no answer to test I: nothing is known
    **{("-", t2, t3): None for t2 in ("-", "A", "B") for t3 in ("-", "A", "B", "C")},
    # no NAT: EIM whatever II and III say (the probe does not run them then)
    **{("local", t2, t3): EIM for t2 in ("-", "A", "B") for t3 in ("-", "A", "B", "C")},
    # NAT
    ("A", "-", "-"): None,  # II missing: undecided
    ("A", "-", "A"): None,
    ("A", "-", "B"): None,
    ("A", "-", "C"): None,
    ("A", "A", "-"): EIM,  # II keeps the mapping: EIM, III not needed
    ("A", "A", "A"): EIM,
    ("A", "A", "B"): EIM,  # inconsistent: anomalies() reports it, the RFC tree says EIM
    ("A", "A", "C"): EIM,
    ("A", "B", "-"): None,  # II changes it and III is missing: undecided
    ("A", "B", "A"): APDM,  # III differs from II
    ("A", "B", "B"): ADM,  # III same as II
    ("A", "B", "C"): APDM,
}


def test_mapping_table_covers_every_combination() -> None:
    assert set(MAPPING_TABLE) == set(
        itertools.product(("-", "local", "A"), ("-", "A", "B"), ("-", "A", "B", "C"))
    )


@pytest.mark.parametrize(("labels", "expected"), MAPPING_TABLE.items())
def test_classify_mapping(labels: tuple[str, str, str], expected: str | None) -> None:
    test1, test2, test3 = (ADDRESSES[label] for label in labels)
    assert classify_mapping(LOCAL, test1, test2, test3) == expected


def test_classify_mapping_port_not_preserved_but_stable() -> None:
    assert classify_mapping(LOCAL, M1_OTHER_PORT, M1_OTHER_PORT, M1_OTHER_PORT) == EIM


def test_mapping_compares_canonical_addresses() -> None:
    v6_local: Addr = ("2001:db8::2", 40000)
    assert classify_mapping(v6_local, ("2001:db8:0::2", 40000), None, None) == EIM
    assert not nat_present(("10.0.0.2", 40000), ("::ffff:10.0.0.2", 40000))
    assert nat_present(LOCAL, ("10.0.0.2", 40001))
    assert nat_present(LOCAL, M1)


# --- filtering (RFC 5780 §4.4) ---------------------------------------------------------------

FILTERING_TABLE: dict[tuple[bool | None, bool | None], str | None] = {
    (True, True): EIF,
    (True, False): EIF,  # inconsistent, reported by anomalies()
    (True, None): EIF,
    (False, True): ADF,
    (False, False): APDF,
    (False, None): None,  # test III unusable: undecided
    (None, True): None,  # test II unusable: undecided
    (None, False): None,
    (None, None): None,
}


def test_filtering_table_is_complete() -> None:
    assert set(FILTERING_TABLE) == set(itertools.product((True, False, None), repeat=2))


@pytest.mark.parametrize(("answers", "expected"), FILTERING_TABLE.items())
def test_classify_filtering(answers: tuple[bool | None, bool | None], expected: str | None) -> None:
    assert classify_filtering(*answers) == expected


# --- anomalies -------------------------------------------------------------------------------


def test_anomalies() -> None:
    assert anomalies(M1, M1, M1, True, True) == []
    assert anomalies(M1, M2_OTHER, M3_OTHER, False, False) == []
    notes = anomalies(M1, M1, M3_OTHER, False, True)
    assert len(notes) == 1 and "inconsistent mapping" in notes[0]
    notes = anomalies(M1, None, None, True, False)
    assert len(notes) == 1 and "inconsistent filtering" in notes[0]


# --- timing (RFC 8489 §6.2.1, lab-sized) -----------------------------------------------------


def test_default_schedule_is_bounded_under_two_seconds() -> None:
    assert retransmit_schedule() == pytest.approx([0.2, 0.4, 0.8, 0.4])
    assert transaction_timeout() == pytest.approx(1.8)
    assert transaction_timeout() < 2.0


@pytest.mark.parametrize(
    ("rto", "tries", "rm", "expected"),
    [
        (0.5, 7, 16.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 8.0]),  # RFC 8489 defaults: 39.5 s
        (0.1, 1, 2.0, [0.2]),
        (0.1, 2, 1.0, [0.1, 0.1]),
    ],
)
def test_schedule(rto: float, tries: int, rm: float, expected: list[float]) -> None:
    assert retransmit_schedule(rto, tries, rm) == pytest.approx(expected)


@pytest.mark.parametrize(("rto", "tries", "rm"), [(0, 4, 2), (-1, 4, 2), (0.2, 0, 2), (0.2, 4, 0)])
def test_bad_timing(rto: float, tries: int, rm: float) -> None:
    with pytest.raises(ValueError):
        retransmit_schedule(rto, tries, rm)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 3478)),
        ("192.0.2.1:3479", ("192.0.2.1", 3479)),
        ("relay.lab", ("relay.lab", 3478)),
        ("relay.lab:1", ("relay.lab", 1)),
        ("::1", ("::1", 3478)),
        ("[::1]", ("::1", 3478)),
        ("[2001:db8::1]:5000", ("2001:db8::1", 5000)),
    ],
)
def test_parse_hostport(text: str, expected: Addr) -> None:
    assert parse_hostport(text, 3478) == expected


@pytest.mark.parametrize("text", ["", ":3478", "h:x", "h:70000", "[::1", "[::1]x"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text, 3478)


# --- results ---------------------------------------------------------------------------------


def sample() -> ProbeResult:
    return ProbeResult(
        status="ok",
        server=("192.0.2.1", 3478),
        local=LOCAL,
        other_address=("192.0.2.2", 3479),
        nat_present=True,
        mapping=EIM,
        filtering=APDF,
        port_preserved=True,
        steps=(
            Step(TEST_I, ("192.0.2.1", 3478), answered=True, mapped=M1, sends=1, rtt=0.001),
            Step(FILTERING_II, ("192.0.2.1", 3478), change="ip+port", sends=4),
        ),
        errors=("a note",),
        anomalies=("inconsistent filtering: x",),
        elapsed=3.7,
    )


def test_result_json_round_trip() -> None:
    result = sample()
    line = result.to_json()
    assert "\n" not in line
    assert ProbeResult.from_json(line) == result
    assert result.mapped == {TEST_I: M1, FILTERING_II: None}


def test_result_json_fields() -> None:
    import json

    d = json.loads(sample().to_json())
    assert d["mapping"] == "endpoint-independent"
    assert d["filtering"] == "address-and-port-dependent"
    assert d["nat_present"] is True and d["port_preserved"] is True
    assert d["mapped"] == {"I": ["203.0.113.1", 40000], "filtering-II": None}
    assert d["errors"] == ["a note"]
    assert d["anomalies"] == ["inconsistent filtering: x"] and d["consistent"] is False


def test_result_is_frozen() -> None:
    with pytest.raises(AttributeError):
        sample().mapping = ADM  # type: ignore[misc]


@pytest.mark.parametrize(("status", "code"), EXIT_CODES.items())
def test_exit_codes(status: str, code: int) -> None:
    assert ProbeResult(status=status, server=("192.0.2.1", 3478)).exit_code == code
    assert {"ok": 0, "no-rfc5780": 2, "timeout": 3}.get(status, code) == code


def test_summary_lines() -> None:
    line = sample().summary()
    assert line.startswith(
        "NAT: mapping endpoint-independent, filtering address-and-port-dependent"
    )
    assert "port preserved" in line
    timeout = ProbeResult(status="timeout", server=("192.0.2.1", 3478))
    assert timeout.summary() == "timeout: no answer from server 192.0.2.1:3478"
    assert "no RFC 5780" in ProbeResult(status="no-rfc5780", server=("h", 1)).summary()
