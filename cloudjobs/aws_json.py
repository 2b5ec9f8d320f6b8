"""botocore's JSON response parser, with each output shape's walk planned once.

SQS and DynamoDB answer in JSON. botocore decodes the body with ``json.loads`` and then walks the
decoded value against the operation's output shape, dispatching on every node's type by name
(``getattr(parser, "_handle_" + type_name)``): for a receive of ten messages with three message
attributes each that walk costs about four times the decode. The walk only does three things: it
keeps a structure's modelled members (under their wire names) and drops the absent ones, it turns
blobs and timestamps into ``bytes`` and ``datetime``, and it copies everything else unchanged.

:class:`PlannedJSONParser` does the same walk from a plan made once per output shape: a converter
for each structure (its members' names, wire names and converters), none at all for a list or map
whose items need no conversion (strings, numbers, booleans: the decoded value is already the
answer), and botocore's own handling for what the plan does not cover (tagged unions). Its answers
are botocore's, value for value (``tests/unit/test_aws_json.py`` compares the two on SQS and
DynamoDB responses). Error responses, response metadata and event streams are botocore's code.

:class:`PlannedParserFactory` is registered as the ``response_parser_factory`` component of the
sessions cloudjobs makes (:func:`cloudjobs.aws_clients.new_session`): every JSON-protocol client
they build parses through one parser and its plans; other protocols get botocore's parsers. A
botocore release without the private methods the planned parser builds on (checked once, at import)
gets botocore's own JSON parser as well.
"""

from __future__ import annotations

import threading
from typing import Any, Final, cast

from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.parsers import JSONParser, ResponseParser, ResponseParserFactory

from cloudjobs.aws_shapes import Converter, PlanCache, ShapePlanner, through


class PlannedJSONParser(JSONParser):
    """botocore's ``json`` protocol parser, walking each output shape from a plan (module docstring).

    Thread-safe: plans are made under a lock and read without one.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plans = PlanCache(lambda: _Planner(self))

    def _handle_json_body(self, raw_body: Any, shape: Shape) -> Any:
        # botocore's own decode (an empty body is {}); its private helpers are not in its stubs.
        parsed = cast("Any", self)._parse_body_as_json(raw_body)
        convert = self._plans.plan_for(shape)
        return parsed if convert is None else convert(parsed)


class PlannedParserFactory(ResponseParserFactory):
    """botocore's parser factory, handing out one :class:`PlannedJSONParser` for ``json``.

    botocore asks its factory for a parser on every response; the planned parser keeps its plans
    across responses, so the factory keeps the parser (a new one when the defaults change).
    """

    def __init__(self) -> None:
        super().__init__()
        self._json: PlannedJSONParser | None = None
        self._lock = threading.Lock()

    def set_parser_defaults(self, **kwargs: Any) -> None:
        with self._lock:
            super().set_parser_defaults(**kwargs)
            self._json = None

    def create_parser(self, protocol_name: str) -> ResponseParser:
        if protocol_name != "json" or not _PLANNABLE:
            return super().create_parser(protocol_name)
        parser = self._json
        if parser is None:
            with self._lock:
                if self._json is None:
                    self._json = PlannedJSONParser(**getattr(self, "_defaults", {}))
                parser = self._json
        return parser


class _Planner(ShapePlanner):
    """Makes one output shape's plan for a parser."""

    def __init__(self, parser: PlannedJSONParser) -> None:
        super().__init__()
        self._parser = parser

    def _make(self, shape: Shape) -> Converter | None:
        parser = cast("Any", self._parser)  # botocore's handlers are not in its stubs
        if isinstance(shape, StructureShape):
            if shape.is_document_type:
                return None
            if shape.is_tagged_union:
                return lambda value: parser._handle_structure(shape, value)
            return _structure(self.members(shape))
        if isinstance(shape, ListShape):
            return _list(self.plan(shape.member))
        if isinstance(shape, MapShape):
            return _map(self.plan(shape.key), self.plan(shape.value))
        # Blobs and timestamps have handlers; strings, numbers and booleans come as they are.
        handler = getattr(parser, f"_handle_{shape.type_name}", None)
        if handler is not None and handler.__func__ is not _DEFAULT_HANDLE:
            return lambda value: handler(shape, value)
        return None


_DEFAULT_HANDLE: Final = getattr(ResponseParser, "_default_handle", None)

_PLANNABLE: Final = all(
    callable(getattr(parser, name, None))
    for parser, name in (
        (JSONParser, "_parse_body_as_json"),
        (JSONParser, "_handle_json_body"),
        (JSONParser, "_handle_structure"),
        (ResponseParserFactory, "set_parser_defaults"),
    )
)
"""Whether this botocore has the private methods the planned parser builds on; where a release
renames them, the factory hands out botocore's own parsers."""


def _structure(members: list[tuple[str, str, Converter | None]]) -> Converter:
    # Walks the keys the value has (a message attribute has two of its five members), not the
    # members the model has.
    if all(name == wire_name and member is None for name, wire_name, member in members):
        plain = frozenset(name for name, _, _ in members)
        return lambda value: (
            None if value is None else {k: v for k, v in value.items() if v is not None and k in plain}
        )
    by_wire_name = {wire_name: (name, member) for name, wire_name, member in members}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        parsed = {}
        for wire_name, raw in value.items():
            if raw is not None and (known := by_wire_name.get(wire_name)) is not None:
                name, member = known
                parsed[name] = raw if member is None else member(raw)
        return parsed

    return convert


def _list(member: Converter | None) -> Converter | None:
    if member is None:
        return None
    return lambda value: [item if item is None else member(item) for item in value]


def _map(key: Converter | None, item: Converter | None) -> Converter | None:
    if key is None and item is None:
        return None
    return lambda value: {through(key, k): through(item, v) for k, v in value.items()}
