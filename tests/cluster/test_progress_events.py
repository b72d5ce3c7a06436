"""What a render on a Ray node reports to the daemon between two of its polls.

The daemon polls a node's render a few times a second; a small model's 40 steps can start and
end between two polls. Before, a poll saw only the render's latest event, so `tunehub generate
--cluster` could print no step line at all and the journal never held the denoising phase (the
fleet test waiting for step lines failed on a fast machine)."""

from __future__ import annotations

import threading

from tunehub.cluster.ray_runner import UnpolledEvents


def _steps(status: str, total: int) -> list[dict]:
    return [{"status": status, "completed": i, "total": total} for i in range(1, total + 1)]


def test_a_phase_that_begins_and_ends_between_two_polls_keeps_its_last_step() -> None:
    events = UnpolledEvents()
    stream = [{"status": "loading components"}, *_steps("denoising", 40), {"status": "decoded", "frames": 5}]
    for event in stream:
        events.add(event)
    assert events.take() == [{"status": "loading components"}, {"status": "denoising", "completed": 40, "total": 40},
                             {"status": "decoded", "frames": 5}]  # fmt: skip
    assert events.take() == []


def test_steps_between_polls_give_way_to_the_newest_and_each_phase_end_stays() -> None:
    events = UnpolledEvents()
    for event in _steps("pulling", 3)[:2]:
        events.add(event)
    assert events.take() == [{"status": "pulling", "completed": 2, "total": 3}]  # the render's state now
    for event in [*_steps("pulling", 3)[2:], *_steps("denoising", 10)[:4]]:
        events.add(event)
    assert events.take() == [{"status": "pulling", "completed": 3, "total": 3},
                             {"status": "denoising", "completed": 4, "total": 10}]  # fmt: skip
    # a phase without step counts ends where the next status begins
    for event in ({"status": "present"}, {"status": "present"}, {"status": "loading transformer"}):
        events.add(event)
    assert events.take() == [{"status": "present"}, {"status": "loading transformer"}]


def test_events_added_while_polled_are_each_taken_once() -> None:
    events = UnpolledEvents()
    stream = [event for phase in ("a", "b", "c", "d") for event in _steps(phase, 500)]
    taken: list[dict] = []
    writer = threading.Thread(target=lambda: [events.add(event) for event in stream])
    writer.start()
    while writer.is_alive():
        taken += events.take()
    taken += events.take()
    # every phase's last step arrived, in order, and nothing twice
    ends = [event for event in taken if event["completed"] == event["total"]]
    assert ends == [{"status": phase, "completed": 500, "total": 500} for phase in "abcd"]
    assert len(taken) == len({(e["status"], e["completed"]) for e in taken})
    assert [stream.index(e) for e in taken] == sorted(stream.index(e) for e in taken)
