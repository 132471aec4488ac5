"""The fuzz's mutators and corpus (fuzz/): deterministic for a seed, framed when they say so.

A finding is only useful if the message behind it can be rebuilt from its
seed and index, and a body-focused message only tests the body if Kamailio
can still frame it: both are pure logic, checked here without a lab.
"""

from __future__ import annotations

import random

import pytest

from fuzz import body_mutations, xml_mutations
from fuzz.body_mutations import mutate_body, split
from fuzz.corpus import Corpus, Target, find_index, token
from fuzz.mutations import mutate_named
from fuzz.seeds import BODY_METHODS, Seeds

TARGET = Target(
    "sipshield.lab", {"udp": "127.0.0.1:5060", "tcp": "127.0.0.1:5060"}, "127.0.0.1:5090"
)
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@sipshield.lab">\r\n'
    b'  <tuple id="t1"><status><basic>open</basic></status></tuple>\r\n</presence>\r\n'
)


@pytest.fixture(scope="module")
def seeds() -> Seeds:
    return Seeds.load()


def body_seed_messages(seeds: Seeds) -> list[bytes]:
    return [
        seed.sample.render(call_id="fz7-1@fuzz", branch="z9hG4bK-fz7-1")
        for family in seeds.bodies.values()
        for seed in family
    ]


def content_lengths(head: bytes) -> list[bytes]:
    eol = b"\n" if b"\r\n" not in head else b"\r\n"
    return [
        line.partition(b":")[2].strip()
        for line in head.split(eol)[1:]
        if line.partition(b":")[0].strip().lower() in (b"content-length", b"l")
    ]


def test_whole_message_mutations_are_a_function_of_the_seed(seeds: Seeds) -> None:
    message = seeds.by_family["validation"][0].sample.render()
    first = [mutate_named(message, random.Random(n)) for n in range(200)]
    again = [mutate_named(message, random.Random(n)) for n in range(200)]
    assert first == again
    assert len({data for data, _ in first}) > 150  # and the seeds do differ


def test_message_i_is_the_same_whatever_was_made_before(seeds: Seeds) -> None:
    corpus = Corpus(seeds, TARGET, seed=11, total=1000, bodies=250)
    in_order = [corpus.make(i) for i in range(40)]
    fresh = Corpus(seeds, TARGET, seed=11, total=1000, bodies=250)
    assert [fresh.make(i) for i in reversed(range(40))][::-1] == in_order
    other_seed = Corpus(seeds, TARGET, seed=12, total=1000, bodies=250)
    assert [other_seed.make(i).data for i in range(40)] != [m.data for m in in_order]


def test_exactly_the_planned_bodies_spread_through_the_run(seeds: Seeds) -> None:
    corpus = Corpus(seeds, TARGET, seed=1, total=10_000, bodies=2_500)
    kinds = [corpus.kind(i) for i in range(10_000)]
    assert kinds.count("body") == 2_500
    assert kinds[:1000].count("body") == 250


def test_body_kind_starts_from_a_message_notify_or_publish_body(seeds: Seeds) -> None:
    corpus = Corpus(seeds, TARGET, seed=3, total=400, bodies=400)
    made = [corpus.make(i) for i in range(400)]
    assert {m.kind for m in made} == {"body"}
    assert {m.method for m in made} <= set(BODY_METHODS)
    assert {m.method for m in made} == set(BODY_METHODS)


def test_every_fuzz_template_carries_the_token_that_traces_replies(seeds: Seeds) -> None:
    for family in ("torture", "bodies"):
        for seed in seeds.by_family[family]:
            rendered = seed.sample.render(call_id=f"{token(5, 42)}@fuzz", branch="z9hG4bK-fz5-42")
            assert find_index(rendered, 5) == 42, seed.name


def test_framed_body_mutations_keep_one_matching_content_length(seeds: Seeds) -> None:
    framed = 0
    for n, message in enumerate(body_seed_messages(seeds) * 25):
        mutated = mutate_body(message, random.Random(n))
        head, _, body = split(mutated.message)
        original_head = split(message)[0]
        if mutated.framed:
            framed += 1
            assert content_lengths(head) == [str(len(body)).encode()], mutated.mutations
            # Request line and Call-ID are the seed's: only the body and its description moved.
            if "remethod" not in mutated.mutations:
                assert head.split(b"\r\n")[0] == original_head.split(b"\r\n")[0]
            assert b"Call-ID: fz7-1@fuzz" in head
        else:
            assert mutated.mutations[-1].startswith("length_")
            if mutated.mutations[-1] != "length_stale":  # the seed's, which may still fit
                assert content_lengths(head) != [str(len(body)).encode()], mutated.mutations
    assert framed > 0.7 * len(body_seed_messages(seeds) * 25)


def test_body_mutations_are_a_function_of_the_seed(seeds: Seeds) -> None:
    message = body_seed_messages(seeds)[0]
    assert [mutate_body(message, random.Random(n)) for n in range(100)] == [
        mutate_body(message, random.Random(n)) for n in range(100)
    ]


@pytest.mark.parametrize("mutation", body_mutations.BODY_MUTATIONS, ids=lambda m: m.__name__)
def test_each_body_mutation_takes_any_body(mutation: body_mutations.BodyMutation) -> None:
    for body in (PIDF, b"", b"hello", b"--b\r\n\r\nx\r\n--b--\r\n"):
        for n in range(20):
            assert isinstance(mutation(body, random.Random(n)), bytes)


def test_xml_mutations_do_what_they_say() -> None:
    rng = random.Random(1)
    expanded = xml_mutations.entity_expansion(PIDF, rng)
    assert b"<!DOCTYPE presence [<!ENTITY" in expanded
    assert expanded.index(b"<!DOCTYPE") > expanded.index(b"?>")  # after the declaration
    nested = xml_mutations.deep_nesting(PIDF, random.Random(2))
    assert max(nested.count(b"<a>"), nested.count(b"<x:y>"), nested.count(b"<presence>")) >= 32
    assert b"\x00" in xml_mutations.nul_bytes(PIDF, random.Random(3))
    external = xml_mutations.external_entity(PIDF, random.Random(4))
    assert b"<!DOCTYPE" in external and (b"SYSTEM" in external or b"%p;" in external)
