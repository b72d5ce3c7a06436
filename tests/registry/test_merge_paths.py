"""The registry's one-file merge (the fast path every id of a large folder takes) gives exactly
what the general merge of the same file gives: definition, problems and summary."""

from __future__ import annotations

import json

from tests.fixtures.homes import Home

CASES = {
    "plain": {"prompt": "a cat", "model": {"name": "Plain", "architecture": "t2v", "URLs": ["a.safetensors"]}},
    "settings_only": {"prompt": "no model key", "seed": 3},
    "model_not_an_object": {"prompt": "x", "model": ["not", "an", "object"]},
    "no_name": {"model": {"architecture": "t2v", "URLs": ["b.safetensors"]}},
    "no_architecture": {"model": {"name": "No arch"}},
    "empty_architecture": {"model": {"name": "Empty", "architecture": "  "}},
    "architecture_not_a_string": {"model": {"name": "Odd", "architecture": 7}},
    "hidden": {"model": {"name": "Hidden", "architecture": "i2v", "visible": False, "description": "d"}},
    "name_not_a_string": {"model": {"name": ["x"], "architecture": "t2v", "description": 5}},
    "reference": {"model": {"name": "Ref", "architecture": "t2v", "URLs": "plain", "loras": "plain"}},
    "bad_urls": {"model": {"name": "Bad", "architecture": "t2v", "URLs": 5}},
}


def test_one_file_merge_equals_the_general_merge(home: Home) -> None:
    for definition_id, data in CASES.items():
        (home.finetunes / f"{definition_id}.json").write_text(json.dumps(data, indent=4), encoding="utf-8")
    registry = home.registry()
    for definition_id in CASES:
        fast = registry._merged[definition_id]
        assert len(fast.entries) == 1
        registry._merge_many(definition_id, list(fast.entries))
        general = registry._merged[definition_id]
        assert general is not fast
        for field in ("id", "data", "files", "origin", "readonly"):
            assert getattr(general.definition, field) == getattr(fast.definition, field), (definition_id, field)
        assert [str(p) for p in general.definition.problems] == [str(p) for p in fast.definition.problems], definition_id
        assert general.definition.summary() == fast.definition.summary(), definition_id
    # the cases reach both outcomes: valid ones and each kind of problem
    summaries = {i: registry._merged[i].definition.summary() for i in CASES}
    assert summaries["plain"]["valid"] and summaries["hidden"]["visible"] is False
    assert not summaries["no_name"]["valid"] and not summaries["empty_architecture"]["valid"]
    assert summaries["name_not_a_string"]["name"] == "name_not_a_string"
