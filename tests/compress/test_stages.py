"""The stage and scope registries: every stage a recipe may name has a handler, every prune scope an
allocation, every mask schedule an implementation; the driver needs nothing else."""
from __future__ import annotations

import typing

import pytest

from edgekit.compress.config import recipe_from_dict
from edgekit.compress.stages import HANDLERS, DistillConfig, PruneConfig, QuantizeConfig, handler_for, stage_types
from edgekit.errors import InputError


def test_every_stage_type_has_its_handler_and_loads():
    assert stage_types() == ["prune", "distill", "quantize"]
    assert set(HANDLERS) == {PruneConfig, DistillConfig, QuantizeConfig}
    rec = recipe_from_dict({"stages": [{"type": t} for t in stage_types()]})
    assert [handler_for(s).__name__ for s in rec.stages] == ["run_prune", "run_distill", "run_quantize"]
    # only the distill entry leaves the student as it is (the driver does not score after it)
    assert [s.changes_student for s in rec.stages] == [True, False, True]
    with pytest.raises(InputError, match="allowed: prune, distill, quantize"):
        recipe_from_dict({"stages": [{"type": "sparsify"}]})


def test_every_scope_and_schedule_is_registered():
    from edgekit.compress.allocation import SCOPES
    from edgekit.compress.stages.prune import SCHEDULES

    assert set(SCOPES) == set(typing.get_args(PruneConfig.model_fields["scope"].annotation))
    assert {PruneConfig().schedule, PruneConfig(oneshot=True).schedule} == set(SCHEDULES)


def test_objective_without_a_distill_entry_is_the_labels_alone():
    from edgekit.compress.stages.distill import LABELS_ONLY, objective

    rec = recipe_from_dict({"stages": [{"type": "prune"}]})
    assert objective(rec) is LABELS_ONLY and LABELS_ONLY.label_weight == 1.0
    assert LABELS_ONLY.logits_weight == LABELS_ONLY.hidden_weight == LABELS_ONLY.relation_weight == 0
    rec = recipe_from_dict({"stages": [{"type": "distill", "hidden_weight": 2.0}]})
    assert objective(rec).hidden_weight == 2.0


def test_per_layer_scope_is_uniform_unless_kinds_or_layers_are_fixed():
    from edgekit.arch import encoder_linears
    from edgekit.compress.allocation import allocate
    from edgekit.zoo import load_torch, resolve

    model, _ = load_torch(resolve("tiny-bert"))
    lin = encoder_linears(model)
    rec = recipe_from_dict({"stages": [{"type": "prune"}]})
    assert allocate(lin, rec.stage("prune"), 4, rec) is None
    cfg = PruneConfig(kind_sparsity={"q": 0.9})
    alloc = allocate(lin, cfg, 4, rec)
    assert alloc["layers.0.q"] == 0.9 and alloc["layers.0.k"] < 0.8
    glob = allocate(lin, PruneConfig(scope="global", sparsity=0.5), 4, rec)
    assert set(glob) == set(lin) and abs(sum(glob.values()) / len(glob) - 0.5) < 0.2
