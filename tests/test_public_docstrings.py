"""The public surface is documented the checkable way: every name of `qtuning.__all__` has a Google-style
docstring with Args (what ruff's D417 then checks argument by argument, see pyproject.toml) and, for a
function that returns something, Returns. ruff alone passes a function without an Args section."""

import dataclasses
import inspect

import pytest

import qtuning

# names that are values, not functions or classes (documented where they are defined: Role's docstring, ...)
VALUES = {"IGNORE_INDEX", "ROLE_DROPPED", "ROLE_Q2", "ROLE_Q4"}


def _public_callables():
    for name in sorted(set(qtuning.__all__) - VALUES):
        yield name, getattr(qtuning, name)


@pytest.mark.parametrize("name,obj", list(_public_callables()), ids=[n for n, _ in _public_callables()])
def test_every_public_name_has_args_and_returns(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name}: no docstring"
    if inspect.isclass(obj):
        if issubclass(obj, Exception):
            return  # an error class: its docstring says when it is raised
        if dataclasses.is_dataclass(obj):
            # a configuration documents each field in its help (--help, docs/configuration.md); a result type
            # in an Attributes: section
            own = {
                n for c in obj.__mro__ if c.__module__.startswith("qtuning") for n in vars(c).get("__annotations__", {})
            }
            fields = [f for f in dataclasses.fields(obj) if f.name in own and f.init]
            if "Attributes:" in doc:
                listed = doc.split("Attributes:", 1)[1]
                assert [f.name for f in fields if f"{f.name}:" not in listed] == [], name
            else:
                assert own and [f.name for f in fields if not f.metadata.get("help")] == [], name
            return
        init = [p for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "args", "kwargs")]
        if init:
            assert "Args:" in doc or "Attributes:" in doc, f"{name}: the class docstring documents no construction"
        return
    params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
    if params:
        assert "Args:" in doc, f"{name}: no Args section"
        for p in params:
            assert f"{p.name.lstrip('*')}" in doc.split("Args:", 1)[1], f"{name}: argument {p.name} not described"
    if inspect.signature(obj).return_annotation not in (None, "None", inspect.Signature.empty):
        assert "Returns:" in doc, f"{name}: no Returns section"
