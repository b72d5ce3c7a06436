"""A user's save that lands while tunehub rewrites a definition is never lost.

Real files, real threads, real renames: tunehub's rewrite (read, change, write temp,
fsync, rename) runs while the "user" saves the same file, by rename as most editors do
or in place, at random moments inside that window.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

from tunehub.errors import ConcurrentEditError
from tunehub.safeio import update_definition

CONFLICT_SUFFIX = ".tunehub-conflict"

ROUNDS = 160


def _user_save(path: Path, data: dict, in_place: bool) -> None:
    text = json.dumps(data, indent=4) + "\n"
    if in_place:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def test_no_save_is_lost_while_tunehub_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "ft.json"
    rng = random.Random(20)
    outcomes = {"merged": 0, "conflict": 0, "overwritten by the later save": 0}
    for round_ in range(ROUNDS):
        conflict = path.with_name(path.name + CONFLICT_SUFFIX)
        conflict.unlink(missing_ok=True)
        path.write_text(json.dumps({"prompt": f"r{round_} base", "model": {"name": "x"}}, indent=4) + "\n")
        errors: list[BaseException] = []

        def rewrite(mark: int = round_) -> None:
            def mutate(data: dict) -> None:
                data["model"]["URLs"] = [f"tunehub-{mark}.safetensors"]

            try:
                update_definition(path, mutate)
            except BaseException as exc:  # anything but ConcurrentEditError fails the round below
                errors.append(exc)

        writer = threading.Thread(target=rewrite)
        writer.start()
        time.sleep(rng.uniform(0, 0.004))
        user = {"prompt": f"r{round_} user", "model": {"name": "x"}}
        _user_save(path, user, in_place=round_ % 2 == 1)
        writer.join(10)
        assert not writer.is_alive()
        final = json.loads(path.read_text())
        assert final["prompt"] == f"r{round_} user", f"round {round_}: the user's save was lost: {final}"
        assert all(isinstance(e, ConcurrentEditError) for e in errors), f"round {round_}: {errors!r}"
        if errors:
            # tunehub's change is not silently dropped either: written beside, and said
            assert conflict.is_file() and CONFLICT_SUFFIX in str(errors[0])
            outcomes["conflict"] += 1
        elif final["model"].get("URLs") == [f"tunehub-{round_}.safetensors"]:
            outcomes["merged"] += 1  # re-read and re-applied on top of the user's save
        else:
            outcomes["overwritten by the later save"] += 1
    print(outcomes)
