"""botocore's JSON request serializer, with each input shape's walk planned once.

SQS and DynamoDB take JSON requests. Before ``json.dumps``, botocore walks the parameters against the
operation's input shape, dispatching on every node's type by name: a SendMessageBatch of ten
messages with three attributes each cost ~95 us of walking against ~30 us for the ``json.dumps`` of
the same parameters, an idempotency lease's UpdateItem ~39 us against ~15. The walk only does three
things: it writes a structure's members under their wire names (a key the shape does not have is a
``KeyError``), it turns blobs into base64, timestamps into numbers and floats into JSON's numbers,
and it copies everything else unchanged, in the order given.

:class:`PlannedJSONSerializer` does the same from a plan made once per input shape: a structure
whose members keep their names and need no conversion is checked and passed on as it is, one with
members to convert is copied and only those members converted, and blobs, timestamps and floats go
through botocore's own methods. The request it builds is botocore's, byte for byte
(``tests/unit/test_aws_json_requests.py`` compares the two on SQS and DynamoDB requests).

:func:`plan_client_requests` registers it on a botocore session: every client the session builds
whose serializer is botocore's plain JSON one (no parameter validation: cloudjobs' clients leave
the checks to the service) serializes through a planned serializer. :func:`cloudjobs.aws_clients.new_session`
does so for the sessions cloudjobs makes. botocore has no component for serializers, so the client's
``_serializer`` is replaced when the client is built, and only where botocore's serializer has the
private methods and attributes the plan builds on (checked at import and per client; otherwise the
client keeps botocore's); anything else stays botocore's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.serialize import JSONSerializer

from cloudjobs.aws_shapes import Converter, PlanCache, ShapePlanner


class PlannedJSONSerializer(JSONSerializer):
    """botocore's ``json`` protocol serializer, walking each input shape from a plan (module
    docstring). Thread-safe."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plans = PlanCache(lambda: _Planner(self))

    def _serialize(self, serialized: Any, value: Any, shape: Shape, key: Any = None) -> None:
        if key is not None or not isinstance(shape, StructureShape) or shape.is_document_type:
            # Not the walk from an input structure down: botocore's own.
            cast("Any", super())._serialize(serialized, value, shape, key)
            return
        convert = self._plans.plan_for(shape)
        serialized.update(value if convert is None else convert(value))


class _Planner(ShapePlanner):
    """Makes one input shape's plan for a serializer."""

    def __init__(self, serializer: PlannedJSONSerializer) -> None:
        super().__init__()
        self._serializer = serializer

    def _make(self, shape: Shape) -> Converter | None:
        if isinstance(shape, StructureShape):
            if shape.is_document_type:
                return None
            return _structure(self.members(shape))
        if isinstance(shape, ListShape):
            return _list(self.plan(shape.member))
        if isinstance(shape, MapShape):
            return _map(self.plan(shape.value))
        # Blobs, timestamps and floats have botocore's methods; strings, integers and booleans are
        # written as they are.
        method = getattr(self._serializer, f"_serialize_type_{shape.type_name}", None)
        if method is None:
            return None

        def convert(value: Any) -> Any:
            box: dict[str, Any] = {}
            method(box, value, shape, "value")
            return box["value"]

        return convert


def _structure(members: list[tuple[str, str, Converter | None]]) -> Converter:
    if any(name != wire_name for name, wire_name, _ in members):
        by_name = {name: (wire_name, member) for name, wire_name, member in members}

        def renamed(value: Any) -> Any:
            serialized = {}
            for name, item in value.items():
                wire_name, member = by_name[name]  # an unknown key is a KeyError, as in botocore
                serialized[wire_name] = item if member is None else member(item)
            return serialized

        return renamed
    names = frozenset(name for name, _, _ in members)
    converted = [(name, member) for name, _, member in members if member is not None]

    def convert(value: Any) -> Any:
        if type(value) is not dict or not value.keys() <= names:
            _check_keys(value, names)
            value = dict(value)
        elif not converted:
            return value
        else:
            value = value.copy()
        for name, member in converted:
            if name in value:
                value[name] = member(value[name])
        return value

    return convert


def _check_keys(value: Mapping[str, Any], names: frozenset[str]) -> None:
    for name in value:
        if name not in names:
            raise KeyError(name)


def _list(member: Converter | None) -> Converter:
    if member is None:
        return lambda value: value if type(value) is list else list(value)
    return lambda value: [member(item) for item in value]


def _map(item: Converter | None) -> Converter:
    if item is None:
        return lambda value: value if type(value) is dict else dict(value.items())
    return lambda value: {key: item(entry) for key, entry in value.items()}


def plan_client_requests(session: Any) -> None:
    """Have every client ``session`` (a botocore session) builds serialize JSON requests through a
    :class:`PlannedJSONSerializer` (see the module docstring)."""
    session.register("creating-client-class", _add_planned_requests)


def _add_planned_requests(base_classes: list[type], **_: Any) -> None:
    base_classes.insert(0, _PlannedRequests)


class _PlannedRequests:
    """A client base class: swaps botocore's plain JSON serializer for a planned one."""

    _serializer: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Private botocore attributes: where a release renames them, the client keeps botocore's.
        original = getattr(self, "_serializer", None)
        precision = getattr(original, "_timestamp_precision", None)
        if _PLANNABLE and type(original) is JSONSerializer and precision is not None:
            self._serializer = PlannedJSONSerializer(timestamp_precision=precision)


_PLANNABLE: Final = all(
    callable(getattr(JSONSerializer, f"_serialize{name}", None))
    for name in ("", "_type_structure", "_type_list", "_type_map", "_type_blob", "_type_timestamp")
)
"""Whether this botocore's JSON serializer has the private methods the plan builds on (a blob the
plan did not know to convert would go out unencoded); where a release renames them, clients keep
botocore's."""
