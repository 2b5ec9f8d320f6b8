"""A botocore model of its own, for the planned JSON parser's and serializer's tests: it covers what
SQS and DynamoDB do not use (wire names that differ from member names, tagged unions, documents,
timestamps in lists and in ISO form, floats, a structure that contains itself)."""

from __future__ import annotations

from typing import Any

from botocore.model import ServiceModel

_HTTP = {"method": "POST", "requestUri": "/"}

MODEL: dict[str, Any] = {
    "metadata": {"protocol": "json", "apiVersion": "2026-01-01", "jsonVersion": "1.1", "targetPrefix": "T"},
    "operations": {
        "Op": {"name": "Op", "http": _HTTP, "input": {"shape": "In"}, "output": {"shape": "Out"}},
        "Doc": {"name": "Doc", "http": _HTTP, "input": {"shape": "DocIn"}},
    },
    "shapes": {
        "In": {
            "type": "structure",
            "members": {
                "Renamed": {"shape": "Str", "locationName": "wireName"},
                "When": {"shape": "Time"},
                "Iso": {"shape": "IsoTime"},
                "Times": {"shape": "TimeList"},
                "Ratio": {"shape": "Float"},
                "Choice": {"shape": "Choice"},
                "Tree": {"shape": "Tree"},
                "Doc": {"shape": "Doc"},
            },
        },
        "Out": {
            "type": "structure",
            "members": {
                "Renamed": {"shape": "Str", "locationName": "wireName"},
                "Choice": {"shape": "Choice"},
                "Times": {"shape": "TimeList"},
                "Tree": {"shape": "Tree"},
                "Doc": {"shape": "Doc"},
            },
        },
        "DocIn": {"type": "structure", "members": {}, "document": True},
        "Str": {"type": "string"},
        "Blob": {"type": "blob"},
        "Float": {"type": "double"},
        "Time": {"type": "timestamp"},
        "IsoTime": {"type": "timestamp", "timestampFormat": "iso8601"},
        "TimeList": {"type": "list", "member": {"shape": "Time"}},
        "Choice": {
            "type": "structure",
            "union": True,
            "members": {"a": {"shape": "Str"}, "b": {"shape": "Blob"}},
        },
        "Tree": {
            "type": "structure",
            "members": {"label": {"shape": "Str"}, "children": {"shape": "Trees"}, "data": {"shape": "Blob"}},
        },
        "Trees": {"type": "list", "member": {"shape": "Tree"}},
        "Doc": {"type": "structure", "members": {}, "document": True},
    },
}


def own_model() -> ServiceModel:
    """The model, freshly built (its shapes are new objects each time)."""
    return ServiceModel(MODEL, service_name="own")
