"""RedeliveryWindow: a broker redelivery gets its first copy's id, a new reading never does."""

from __future__ import annotations

from agent.model import ReceivedMessage
from agent.source import RedeliveryWindow


def _m(mid: int, *, connection: int = 1, dup: bool = False, payload: bytes = b"{}", qos: int = 1):
    return ReceivedMessage("t/a", payload, qos, False, 0, mid=mid, connection=connection, dup=dup)


def test_redelivery_fresh_message_keeps_its_own_id():
    """A message seen for the first time keeps the id it was received with."""
    window = RedeliveryWindow()
    message = _m(1)
    assert window.assign(message) == message.message_id


def test_redelivery_dup_on_a_later_connection_reuses_the_id():
    """DUP, same packet id and bytes, on a later connection: the first copy's id."""
    window = RedeliveryWindow()
    first = _m(1)
    window.assign(first)
    assert window.assign(_m(1, connection=2, dup=True)) == first.message_id
    assert window.reused == 1


def test_redelivery_dup_on_the_same_connection_is_not_a_redelivery():
    """The broker resends only when a session resumes: a DUP on the same connection is new."""
    window = RedeliveryWindow()
    window.assign(_m(1))
    again = _m(1, dup=True)
    assert window.assign(again) == again.message_id


def test_redelivery_qos0_messages_are_never_matched():
    """QoS 0 has no packet id and no redelivery: its own id, and no entry."""
    window = RedeliveryWindow()
    message = _m(0, qos=0)
    assert window.assign(message) == message.message_id
    assert len(window) == 0


def test_redelivery_first_non_dup_ends_the_redelivery_phase():
    """After the first DUP=0 message of a connection, older connections' entries are dropped."""
    window = RedeliveryWindow()
    window.assign(_m(1))
    window.assign(_m(2))
    window.assign(_m(1, connection=2, dup=True))
    window.assign(_m(3, connection=2))  # new: the broker has resent everything unacked
    late = _m(2, connection=3, dup=True)
    assert window.assign(late) == late.message_id
    assert len(window) == 3


def test_redelivery_journal_round_trip_survives_a_restart():
    """Entries in the journal give a redelivery after a restart its first id."""
    window = RedeliveryWindow()
    first = [_m(mid) for mid in range(1, 4)]
    for message in first:
        window.assign(message)
    journal = window.journal()
    restarted = RedeliveryWindow()
    assert restarted.load(journal) == 3
    for message in first:
        assert restarted.assign(_m(message.mid, dup=True)) == message.message_id


def test_redelivery_journal_keeps_the_groups_whose_pubacks_are_unconfirmed():
    """Groups whose PUBACKs the broker provably processed leave the journal; the others stay."""
    window = RedeliveryWindow()
    for group in range(6):
        window.assign(_m(group + 1))
        window.end_group((1, group + 1))  # one PUBACK per group on connection 1
    window.confirm(1, 2)  # the broker processed the first two PUBACKs
    restarted = RedeliveryWindow()
    assert restarted.load(window.journal()) == 4  # groups 2..5


def test_redelivery_group_with_pubacks_that_could_not_be_sent_stays_journaled():
    """A group acked on a dead connection is never confirmed; it stays until redelivered."""
    window = RedeliveryWindow()
    window.assign(_m(1))
    window.end_group(None)
    window.assign(_m(2))
    window.end_group((1, 1))
    window.confirm(1, 1)
    restarted = RedeliveryWindow()
    assert restarted.load(window.journal()) == 2


def test_redelivery_journal_is_bounded_in_entries():
    """A journal never holds more than max_journal_entries entries (the newest)."""
    window = RedeliveryWindow(max_journal_entries=10)
    for mid in range(1, 101):
        window.assign(_m(mid))
    journal = window.journal()
    assert len(journal) == 8 + 10 * 26
    restarted = RedeliveryWindow()
    restarted.load(journal)
    assert restarted.assign(_m(100, dup=True)) != _m(100).message_id  # sanity: ids differ
    assert len(restarted) == 10


def test_redelivery_window_is_bounded_in_entries():
    """The window keeps at most max_entries entries, dropping the oldest."""
    window = RedeliveryWindow(max_entries=5)
    for mid in range(1, 50):
        window.assign(_m(mid))
    assert len(window) == 5


def test_redelivery_unreadable_journal_is_ignored():
    """A journal that does not parse is ignored: fresh ids, no exception."""
    window = RedeliveryWindow()
    assert window.load(b"garbage") == 0
    assert window.load(RedeliveryWindow().journal()[:-1] + b"x") == 0
    assert len(window) == 0


def test_redelivery_crash_during_the_redelivery_phase_keeps_the_first_ids():
    """Crash again while redeliveries come in: the next start still gives them their first ids."""
    first = RedeliveryWindow()
    originals = [_m(mid) for mid in range(1, 6)]
    for message in originals:
        first.assign(message)
    second = RedeliveryWindow()
    second.load(first.journal())
    assert second.assign(_m(1, dup=True)) == originals[0].message_id  # then a crash
    third = RedeliveryWindow()
    third.load(second.journal())  # written with the group that held the first redelivery
    for message in originals:
        assert third.assign(_m(message.mid, dup=True)) == message.message_id


def test_redelivery_journal_drops_carried_entries_once_the_phase_ended():
    """After the first new message on a connection, older connections' entries leave the journal."""
    window = RedeliveryWindow()
    window.assign(_m(1))
    window.end_group((1, 1))  # its PUBACK never confirmed: the connection dropped
    window.assign(_m(2, connection=2))  # DUP=0: nothing of connection 1 can come again
    restarted = RedeliveryWindow()
    assert restarted.load(window.journal()) == 1
