"""Fixtures of the architecture tests: tiny random-weight model folders (arch_models.py builds them)."""
from __future__ import annotations

import pytest

from arch_models import build, save


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """build + save, cached per module by (arch, head, options)."""
    cache = {}

    def make(arch, head="sequence", pooling=None, **kw):
        key = (arch, head, pooling, tuple(sorted(kw.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{arch}-{head}")
            cache[key] = save(build(arch, head, **kw), folder, pooling)
        return cache[key]

    return make
