"""Which people of one request may commit concurrently: those sharing no identity."""

from beacon.ingest.pipeline import same_person_chains


def test_people_sharing_an_identity_chain_in_batch_order() -> None:
    people = [
        {("anonymous_id", "device-1")},
        {("user_id", "ann")},
        {("user_id", "ann"), ("anonymous_id", "device-1")},  # links the two before it
        {("email", "bob@example.com")},
        {("anonymous_id", "device-1")},
    ]

    assert same_person_chains(people) == [[0, 1, 2, 4], [3]]


def test_a_link_late_in_the_batch_joins_chains_that_began_apart() -> None:
    people = [{("user_id", "a")}, {("user_id", "b")}, {("user_id", "c")}, {("user_id", "c")}]
    people.append({("user_id", "a"), ("user_id", "c")})

    assert same_person_chains(people) == [[0, 2, 3, 4], [1]]


def test_people_named_by_nothing_in_common_are_apart() -> None:
    assert same_person_chains([{("user_id", "a")}, set(), {("user_id", "b")}]) == [[0], [1], [2]]
