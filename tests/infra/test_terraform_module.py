"""The Terraform module, parsed with python-hcl2 and checked against the library.

No provider can be downloaded here, so ``terraform validate`` never runs: these tests read the HCL and
check what cloudjobs relies on (redrive, TLS-only policies, encryption, the table's shape, the IAM
actions each role needs) and that the module's defaults and names are ``cloudjobs.provisioning``'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudjobs.provisioning import (
    DEFAULT_DELAY_SECONDS,
    DEFAULT_DLQ_RETENTION_SECONDS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_MESSAGE_RETENTION_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    DLQ_SUFFIX,
    FIFO_SUFFIX,
    MAX_DELAY_SECONDS,
    MAX_MAX_RECEIVE_COUNT,
    MAX_QUEUE_NAME_LENGTH,
    MAX_RETENTION_SECONDS,
    MAX_VISIBILITY_TIMEOUT_SECONDS,
    MIN_MAX_MESSAGE_SIZE,
    MIN_RETENTION_SECONDS,
    TABLE_JOB_ID_INDEX,
    TABLE_PARTITION_KEY,
    TABLE_TTL_ATTRIBUTE,
)
from cloudjobs.settings import ENV_PREFIX, Settings
from tests.infra.terraform import (
    EXAMPLES,
    MODULE,
    TERRAFORM,
    Configuration,
    conditional,
    holds,
    parse,
    patterns,
    statements,
)

# The first 6.x provider release whose aws_sqs_queue accepts a 1 MiB max_message_size
# (hashicorp/terraform-provider-aws#43710, released in 6.8.0; see the module's README).
FIRST_PROVIDER_MINOR_WITH_1_MIB_MESSAGES = 8

# The attribute the job_id-index is keyed on.
TABLE_JOB_ID_ATTRIBUTE = "job_id"


def _compact(expression: str) -> str:
    return re.sub(r"\s+", "", expression)


@pytest.fixture(scope="module")
def module() -> Configuration:
    return parse(MODULE)


# ---------------------------------------------------------------------------------------------------
# Parity with cloudjobs.provisioning
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "library_default"),
    [
        ("visibility_timeout_seconds", DEFAULT_VISIBILITY_TIMEOUT_SECONDS),
        ("max_receive_count", DEFAULT_MAX_RECEIVE_COUNT),
        ("message_retention_seconds", DEFAULT_MESSAGE_RETENTION_SECONDS),
        ("dlq_retention_seconds", DEFAULT_DLQ_RETENTION_SECONDS),
        ("max_message_size", DEFAULT_MAX_MESSAGE_SIZE),
        ("delay_seconds", DEFAULT_DELAY_SECONDS),
    ],
)
def test_module_defaults_are_the_librarys(module: Configuration, variable: str, library_default: int) -> None:
    assert module.variables[variable]["default"] == library_default


@pytest.mark.parametrize(
    ("variable", "lowest", "highest"),
    [
        ("visibility_timeout_seconds", 0, MAX_VISIBILITY_TIMEOUT_SECONDS),
        ("max_receive_count", 1, MAX_MAX_RECEIVE_COUNT),
        ("message_retention_seconds", MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS),
        ("dlq_retention_seconds", MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS),
        ("max_message_size", MIN_MAX_MESSAGE_SIZE, DEFAULT_MAX_MESSAGE_SIZE),
        ("delay_seconds", 0, MAX_DELAY_SECONDS),
    ],
)
def test_module_validates_the_ranges_the_library_validates(
    module: Configuration, variable: str, lowest: int, highest: int
) -> None:
    conditions = [_compact(rule["condition"]) for rule in module.variables[variable]["validation"]]
    assert any(
        f"var.{variable}>={lowest}" in condition and f"var.{variable}<={highest}" in condition
        for condition in conditions
    ), conditions


def test_dlq_must_keep_messages_longer_than_the_queue(module: Configuration) -> None:
    conditions = [
        _compact(rule["condition"]) for rule in module.variables["dlq_retention_seconds"]["validation"]
    ]
    assert "${var.dlq_retention_seconds>var.message_retention_seconds}" in conditions


def test_dlq_is_named_like_the_librarys(module: Configuration) -> None:
    assert module.locals["dlq_suffix"] == DLQ_SUFFIX
    assert module.locals["fifo_suffix"] == FIFO_SUFFIX
    assert module.locals["base_name"] == "${trimsuffix(var.name, local.fifo_suffix)}"
    # <name>-dlq, or <name>-dlq.fifo: the suffix goes before ".fifo", as QueueSpec.dlq_name puts it.
    assert (
        module.locals["dlq_name"]
        == '${local.base_name}${local.dlq_suffix}${var.fifo_queue ? local.fifo_suffix : ""}'
    )
    assert module.resources["aws_sqs_queue.dlq"]["name"] == "${local.dlq_name}"
    assert module.resources["aws_sqs_queue.this"]["name"] == "${var.name}"


def test_queue_name_rules_are_the_librarys(module: Configuration) -> None:
    conditions = [_compact(rule["condition"]) for rule in module.variables["name"]["validation"]]
    assert f'${{length(var.name)+length("{DLQ_SUFFIX}")<={MAX_QUEUE_NAME_LENGTH}}}' in conditions
    assert f'${{endswith(var.name,"{FIFO_SUFFIX}")==var.fifo_queue}}' in conditions


def test_both_queues_share_visibility_and_size_and_only_the_queue_is_delayed(module: Configuration) -> None:
    queue = module.resources["aws_sqs_queue.this"]
    dlq = module.resources["aws_sqs_queue.dlq"]
    for attribute in ("visibility_timeout_seconds", "max_message_size", "fifo_queue"):
        assert queue[attribute] == dlq[attribute] == f"${{var.{attribute}}}"
    assert queue["message_retention_seconds"] == "${var.message_retention_seconds}"
    assert dlq["message_retention_seconds"] == "${var.dlq_retention_seconds}"
    assert queue["delay_seconds"] == "${var.delay_seconds}"
    assert "delay_seconds" not in dlq


# ---------------------------------------------------------------------------------------------------
# Redrive
# ---------------------------------------------------------------------------------------------------


def test_queue_redrives_to_its_dlq_after_max_receive_count(module: Configuration) -> None:
    queue = module.resources["aws_sqs_queue.this"]
    assert _compact(queue["redrive_policy"]) == (
        "${jsonencode({deadLetterTargetArn=aws_sqs_queue.dlq.arn,maxReceiveCount=var.max_receive_count})}"
    )


def test_dlq_accepts_redrives_from_its_queue_only_through_its_own_resource(module: Configuration) -> None:
    allow = module.resources["aws_sqs_queue_redrive_allow_policy.dlq"]
    assert allow["queue_url"] == "${aws_sqs_queue.dlq.id}"
    assert _compact(allow["redrive_allow_policy"]) == (
        '${jsonencode({redrivePermission="byQueue",sourceQueueArns=[aws_sqs_queue.this.arn]})}'
    )
    # Inline on the DLQ it would refer to the queue, which refers to the DLQ: a cycle.
    dlq = module.resources["aws_sqs_queue.dlq"]
    assert "redrive_allow_policy" not in dlq
    assert "redrive_policy" not in dlq


# ---------------------------------------------------------------------------------------------------
# Transport and encryption
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("queue", "document"), [("this", "queue"), ("dlq", "dlq")])
def test_each_queue_denies_requests_without_tls(module: Configuration, queue: str, document: str) -> None:
    policy = module.resources[f"aws_sqs_queue_policy.{queue}"]
    assert policy["queue_url"] == f"${{aws_sqs_queue.{queue}.id}}"
    assert policy["policy"] == f"${{data.aws_iam_policy_document.{document}.json}}"
    denials = [
        statement
        for statement in statements(module.data[f"aws_iam_policy_document.{document}"])
        if statement.effect == "Deny"
    ]
    assert len(denials) == 1
    (denial,) = denials
    assert denial.actions == {"sqs:*"}
    assert denial.resources == (f"${{aws_sqs_queue.{queue}.arn}}",)
    assert denial.block["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert denial.block["condition"] == [
        {"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}
    ]


@pytest.mark.parametrize("queue", ["this", "dlq"])
def test_queues_are_encrypted_with_sqs_keys_unless_a_kms_key_is_given(
    module: Configuration, queue: str
) -> None:
    resource = module.resources[f"aws_sqs_queue.{queue}"]
    assert module.locals["uses_sqs_managed_sse"] == "${var.kms_key_arn == null}"
    assert resource["sqs_managed_sse_enabled"] == "${local.uses_sqs_managed_sse ? true : null}"
    assert resource["kms_master_key_id"] == "${var.kms_key_arn}"
    assert module.variables["kms_key_arn"]["default"] is None


def test_table_is_encrypted_with_the_optional_kms_key(module: Configuration) -> None:
    table = module.resources["aws_dynamodb_table.idempotency"]
    assert table["server_side_encryption"] == [{"enabled": True, "kms_key_arn": "${var.kms_key_arn}"}]


# ---------------------------------------------------------------------------------------------------
# Idempotency table
# ---------------------------------------------------------------------------------------------------


def test_table_has_the_keys_and_index_the_library_queries(module: Configuration) -> None:
    table = module.resources["aws_dynamodb_table.idempotency"]
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert module.resolve(table["hash_key"]) == TABLE_PARTITION_KEY
    assert "range_key" not in table
    attributes = {(module.resolve(attribute["name"]), attribute["type"]) for attribute in table["attribute"]}
    assert attributes == {(TABLE_PARTITION_KEY, "S"), (TABLE_JOB_ID_ATTRIBUTE, "S")}
    (index,) = table["global_secondary_index"]
    assert module.resolve(index["name"]) == TABLE_JOB_ID_INDEX
    assert module.resolve(index["hash_key"]) == TABLE_JOB_ID_ATTRIBUTE
    assert index["projection_type"] == "ALL"


def test_table_expires_records_on_the_ttl_attribute_the_library_writes(module: Configuration) -> None:
    table = module.resources["aws_dynamodb_table.idempotency"]
    (ttl,) = table["ttl"]
    assert ttl["enabled"] is True
    assert module.resolve(ttl["attribute_name"]) == TABLE_TTL_ATTRIBUTE


def test_table_has_point_in_time_recovery(module: Configuration) -> None:
    table = module.resources["aws_dynamodb_table.idempotency"]
    assert table["point_in_time_recovery"] == [{"enabled": True}]


# An app's tiers share one table: one instance creates it, the others are given its ARN.
_SHARED_TABLE_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders-idempotency"


def test_table_is_created_only_with_create_table(module: Configuration) -> None:
    condition, created, skipped = conditional(module.resources["aws_dynamodb_table.idempotency"]["count"])
    assert (condition, created, skipped) == ("var.create_table", "1", "0")
    assert module.variables["create_table"]["default"] is True
    assert module.variables["create_table"]["type"] == "bool"


@pytest.mark.parametrize(
    ("create_table", "idempotency_table_arn", "idempotency_table_name", "accepted"),
    [
        (True, None, None, True),
        (True, None, "orders-jobs", True),
        (False, _SHARED_TABLE_ARN, None, True),
        (False, None, None, False),  # no table at all
        (True, _SHARED_TABLE_ARN, None, False),  # an ARN that would be ignored
        (False, _SHARED_TABLE_ARN, "orders-jobs", False),  # a name for a table not created
    ],
)
def test_a_shared_table_is_given_by_its_arn_exactly_when_none_is_created(
    module: Configuration,
    create_table: bool,
    idempotency_table_arn: str | None,
    idempotency_table_name: str | None,
    accepted: bool,
) -> None:
    inputs = {
        "create_table": create_table,
        "idempotency_table_arn": idempotency_table_arn,
        "idempotency_table_name": idempotency_table_name,
    }
    rules = [
        rule["condition"]
        for variable in ("idempotency_table_arn", "idempotency_table_name")
        for rule in module.variables[variable]["validation"]
        if "var.create_table" in rule["condition"]
    ]
    assert len(rules) == 2
    assert all(holds(rule, **inputs) for rule in rules) == accepted


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (_SHARED_TABLE_ARN, True),
        ("arn:aws-us-gov:dynamodb:us-gov-west-1:123456789012:table/orders.jobs_v2", True),
        ("orders-idempotency", False),  # a name, not an ARN
        (f"{_SHARED_TABLE_ARN}/index/{TABLE_JOB_ID_INDEX}", False),  # the index, not the table
        ("arn:aws:sqs:eu-west-1:123456789012:orders", False),
    ],
)
def test_shared_table_arn_must_name_a_table(module: Configuration, value: str, accepted: bool) -> None:
    (pattern,) = [
        pattern
        for rule in module.variables["idempotency_table_arn"]["validation"]
        for pattern in patterns(rule["condition"])
    ]
    assert bool(pattern.fullmatch(value)) == accepted


def test_a_shared_tables_name_is_the_last_part_of_its_arn(module: Configuration) -> None:
    condition, _, shared = conditional(module.locals["table_name"])
    assert condition == "var.create_table"
    # The validated ARN holds one "/" (before the name): split("/", arn)[1] is the name.
    split = re.fullmatch(r'split\("/", var\.idempotency_table_arn\)\[(\d+)\]', shared)
    assert split, shared
    assert _SHARED_TABLE_ARN.split("/")[int(split[1])] == "orders-idempotency"


# ---------------------------------------------------------------------------------------------------
# IAM
# ---------------------------------------------------------------------------------------------------

_QUEUE = "${aws_sqs_queue.this.arn}"
_TABLE = "${local.table_arn}"
_INDEX = "${local.table_index_arn}"
_KEY = "${var.kms_key_arn}"
ROLES = ("consumer", "operator", "producer")
# Which actions each role needs is checked against the calls the code makes, in
# tests/integration/test_iam_coverage.py; here, the policies' shape.


@pytest.mark.parametrize("role", ROLES)
def test_each_role_has_an_allow_only_policy_output(module: Configuration, role: str) -> None:
    for statement in statements(module.data[f"aws_iam_policy_document.{role}"]):
        assert statement.effect == "Allow", statement.sid
    assert module.outputs[f"{role}_policy_json"]["value"] == f"${{data.aws_iam_policy_document.{role}.json}}"


def test_index_grants_name_the_job_id_index_only(module: Configuration) -> None:
    assert module.locals["table_index_arn"] == "${local.table_arn}/index/${local.table_job_id_index}"
    assert module.locals["table_job_id_index"] == TABLE_JOB_ID_INDEX


def test_grants_outputs_and_environment_name_the_table_in_use_created_or_shared(
    module: Configuration,
) -> None:
    for local, attribute in (("table_arn", "arn"), ("table_name", "name")):
        condition, created, shared = conditional(module.locals[local])
        assert condition == "var.create_table"
        assert created == f"aws_dynamodb_table.idempotency[0].{attribute}"
        assert "var.idempotency_table_arn" in shared
    # Everything else goes through those two locals, so nothing names a table that was not created.
    referring = {
        (kind, name)
        for kind, blocks in (
            ("locals", module.locals),
            ("data", module.data),
            ("resources", module.resources),
            ("outputs", module.outputs),
        )
        for name, block in blocks.items()
        if "aws_dynamodb_table.idempotency" in repr(block)
    }
    assert referring == {("locals", "table_arn"), ("locals", "table_name")}
    assert module.outputs["idempotency_table_arn"]["value"] == "${local.table_arn}"
    assert module.outputs["idempotency_table"]["value"] == "${local.table_name}"
    for role in ROLES:
        for statement in statements(module.data[f"aws_iam_policy_document.{role}"]):
            if any(action.startswith("dynamodb:") for action in statement.actions):
                assert set(statement.resources) <= {_TABLE, _INDEX}, (role, statement.sid)


def _sid_suffix(module: Configuration, tier: str) -> str:
    """local.sid_suffix for ``tier``: the tier's words capitalised, or nothing for the default tier."""
    condition, default, joined = conditional(module.locals["sid_suffix"])
    if holds(condition, tier=tier):
        assert default == '""'
        return ""
    assert _compact(joined) == 'join("",[forwordinregexall("[a-z0-9]+",var.tier):title(word)])', joined
    (word,) = patterns(joined)
    # title() capitalises a word's first letter, as Terraform's does for these words.
    return "".join(found[:1].upper() + found[1:] for found in word.findall(tier))


def _sids(module: Configuration, role: str, tier: str) -> list[str]:
    """The statement ids of ``role``'s policy for an instance of ``tier`` (every statement, dynamic too)."""
    return [
        statement.sid.replace("${local.sid_suffix}", _sid_suffix(module, tier))
        for statement in statements(module.data[f"aws_iam_policy_document.{role}"])
    ]


@pytest.mark.parametrize("role", ROLES)
def test_policies_of_an_apps_tiers_merge_without_a_statement_id_twice(
    module: Configuration, role: str
) -> None:
    # One role (a worker's, a Lambda function's) merges its tiers' documents with
    # source_policy_documents, which refuses a Sid seen before; IAM allows only letters and digits.
    tiers = ["default", "critical", "bulk", "bulk-low", "tier_2"]
    merged = [sid for tier in tiers for sid in _sids(module, role, tier)]
    assert len(merged) == len(set(merged)), sorted(merged)
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in merged), merged


def test_default_tier_keeps_the_plain_statement_ids(module: Configuration) -> None:
    assert "ConsumeJobs" in _sids(module, "consumer", "default")
    assert "ConsumeJobsBulkLow" in _sids(module, "consumer", "bulk-low")


def test_the_operator_may_cancel_the_move_task_its_redrive_started(module: Configuration) -> None:
    # A redrive cancels its move task once it moved the count it read at the start (CancelMessageMoveTask,
    # authorised on the source: the DLQ). The parity test cannot see it: its moto stub reports every
    # task as finished, so the cancel never runs there.
    on_the_dlq = [
        statement
        for statement in statements(module.data["aws_iam_policy_document.operator"])
        if "${aws_sqs_queue.dlq.arn}" in statement.resources
    ]
    assert any("sqs:CancelMessageMoveTask" in statement.actions for statement in on_the_dlq)
    assert any("sqs:StartMessageMoveTask" in statement.actions for statement in on_the_dlq)


def test_producer_reaches_the_table_only_with_status_tracking_unique_jobs_or_job_results(
    module: Configuration,
) -> None:
    on_the_table = [
        statement
        for statement in statements(module.data["aws_iam_policy_document.producer"])
        if {_TABLE, _INDEX} & set(statement.resources)
    ]
    names = ("status_tracking", "unique_jobs", "job_results")
    assert on_the_table
    assert {statement.for_each for statement in on_the_table} == {
        f"${{var.{name} ? [true] : []}}" for name in names
    }
    for name in names:
        assert module.variables[name]["default"] is False


@pytest.mark.parametrize("role", ROLES)
def test_kms_grants_exist_only_with_a_kms_key_and_only_through_sqs_dynamodb_and_s3(
    module: Configuration, role: str
) -> None:
    (statement,) = [
        statement
        for statement in statements(module.data[f"aws_iam_policy_document.{role}"])
        if _KEY in statement.resources
    ]
    assert statement.for_each == "${local.uses_sqs_managed_sse ? [] : [true]}"
    assert statement.block["condition"] == [
        {"test": "StringEquals", "variable": "kms:ViaService", "values": "${local.kms_via_services}"}
    ]
    # S3 for the payload bucket's bodies, encrypted with the same key.
    services = {service.split(".", 1)[0] for service in module.locals["kms_via_services"]}
    assert services == {"sqs", "dynamodb", "s3"}


# ---------------------------------------------------------------------------------------------------
# Lambda consumer and alarms
# ---------------------------------------------------------------------------------------------------


def test_lambda_mapping_reports_batch_item_failures(module: Configuration) -> None:
    mapping = module.resources["aws_lambda_event_source_mapping.this"]
    assert mapping["count"] == "${var.lambda_consumer == null ? 0 : 1}"
    assert mapping["event_source_arn"] == _QUEUE
    assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert mapping["batch_size"] == "${var.lambda_consumer.batch_size}"
    assert mapping["maximum_batching_window_in_seconds"] == (
        "${var.lambda_consumer.maximum_batching_window_in_seconds}"
    )


def test_lambda_mapping_requires_six_function_timeouts_of_visibility(module: Configuration) -> None:
    (lifecycle,) = module.resources["aws_lambda_event_source_mapping.this"]["lifecycle"]
    conditions = [_compact(check["condition"]) for check in lifecycle["precondition"]]
    assert "${var.visibility_timeout_seconds>=6*var.lambda_consumer.function_timeout_seconds}" in conditions


@pytest.mark.parametrize(
    ("alarm", "queue", "metric", "threshold"),
    [
        ("dlq_not_empty", "dlq", "ApproximateNumberOfMessagesVisible", 0),
        (
            "oldest_message_age",
            "this",
            "ApproximateAgeOfOldestMessage",
            "${var.oldest_message_age_alarm_seconds}",
        ),
    ],
)
def test_alarms_watch_the_right_queue(
    module: Configuration, alarm: str, queue: str, metric: str, threshold: object
) -> None:
    resource = module.resources[f"aws_cloudwatch_metric_alarm.{alarm}"]
    assert resource["namespace"] == "AWS/SQS"
    assert resource["metric_name"] == metric
    assert resource["dimensions"] == {"QueueName": f"${{aws_sqs_queue.{queue}.name}}"}
    assert resource["comparison_operator"] == "GreaterThanThreshold"
    assert resource["threshold"] == threshold


# ---------------------------------------------------------------------------------------------------
# Settings, variables, provider
# ---------------------------------------------------------------------------------------------------


_ENVIRONMENT_ENTRY = re.compile(rf"({ENV_PREFIX}\w+)=([^,{{}}]+)")


def test_environment_output_maps_outputs_onto_settings(module: Configuration) -> None:
    expression = _compact(module.outputs["environment"]["value"])
    entries = dict(_ENVIRONMENT_ENTRY.findall(expression))
    assert set(entries) == {
        "CLOUDJOBS_QUEUE_URL",
        "CLOUDJOBS_DLQ_URL",
        "CLOUDJOBS_IDEMPOTENCY_TABLE",
        "CLOUDJOBS_STATUS_TRACKING",
        "CLOUDJOBS_LONG_DELAYS",
        "CLOUDJOBS_SCHEDULES_MODE",
        "CLOUDJOBS_SCHEDULE_GROUP",
        "CLOUDJOBS_SCHEDULER_ROLE_ARN",
        "CLOUDJOBS_PAYLOAD_BUCKET",
        "CLOUDJOBS_PAYLOAD_KMS_KEY_ID",
        "CLOUDJOBS_PAYLOAD_DELETE",
    }
    switches = {
        "CLOUDJOBS_STATUS_TRACKING",
        "CLOUDJOBS_LONG_DELAYS",
        "CLOUDJOBS_SCHEDULES_MODE",
        "CLOUDJOBS_PAYLOAD_DELETE",
    }
    for variable, value in entries.items():
        setting = variable.removeprefix(ENV_PREFIX).lower()
        assert setting in Settings.model_fields, f"{variable} is not a cloudjobs setting"
        assert setting in module.outputs, f"{variable} has no output of the same name"
        if variable not in switches:
            assert _compact(module.outputs[setting]["value"]) == f"${{{value}}}"


def test_environment_sets_status_tracking_exactly_when_the_policies_grant_it(module: Configuration) -> None:
    # The producer's policy grants status records only with status_tracking: a process must then
    # write them, and must not try without the grant.
    expression = _compact(module.outputs["environment"]["value"])
    assert 'var.status_tracking?{CLOUDJOBS_STATUS_TRACKING="true"}:{}' in expression
    assert module.outputs["status_tracking"]["value"] == "${var.status_tracking}"


def test_payload_bucket_is_private_encrypted_tls_only_and_expires_after_the_dead_letters(
    module: Configuration,
) -> None:
    block = module.resources["aws_s3_bucket_public_access_block.payloads"]
    assert all(
        block[flag] is True
        for flag in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )
    (rule,) = module.resources["aws_s3_bucket_server_side_encryption_configuration.payloads"]["rule"]
    assert "${var.kms_key_arn}" in json.dumps(rule)
    (deny,) = statements(module.data["aws_iam_policy_document.payloads"])
    assert deny.effect == "Deny"
    assert '"aws:SecureTransport"' in json.dumps(deny.block)
    expiry = module.variables["payload_expiration_days"]
    assert "var.dlq_retention_seconds" in json.dumps(expiry["validation"])
    (lifecycle,) = module.resources["aws_s3_bucket_lifecycle_configuration.payloads"]["rule"]
    assert "${var.payload_expiration_days}" in json.dumps(lifecycle["expiration"])


def test_environment_sets_the_eventbridge_modes_exactly_when_the_policies_grant_them(
    module: Configuration,
) -> None:
    # Producers may create schedules only with eventbridge_scheduler: the modes must follow it, and
    # each switch's value must be one its setting accepts.
    expression = _compact(module.outputs["environment"]["value"])
    assert 'var.eventbridge_scheduler?{CLOUDJOBS_LONG_DELAYS="eventbridge"' in expression
    assert 'CLOUDJOBS_SCHEDULES_MODE="eventbridge"' in expression
    for output, setting in (("long_delays", "long_delays"), ("schedules_mode", "schedules_mode")):
        values = re.findall(r'"([a-z-]+)"', module.outputs[output]["value"])
        assert len(values) == 2
        for value in values:
            Settings(_env_file=None, **{setting: value})  # accepted, or this raises


@pytest.mark.parametrize(
    ("tier", "accepted"),
    [
        ("default", True),
        ("critical", True),
        ("bulk-low", True),
        ("tier_2", True),
        ("Critical", False),
        ("2nd", False),
        ("", False),
        ("bulk,low", False),  # "," separates CLOUDJOBS_QUEUES entries
        ("bulk=low", False),  # "=" separates a tier from its queue
        ("bulk low", False),
    ],
)
def test_tier_names_cannot_break_a_queues_entry(module: Configuration, tier: str, accepted: bool) -> None:
    (pattern,) = [
        pattern for rule in module.variables["tier"]["validation"] for pattern in patterns(rule["condition"])
    ]
    assert bool(pattern.fullmatch(tier)) == accepted
    assert module.variables["tier"]["default"] == "default"


_QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-bulk"


def _queues_entry(module: Configuration, tier: str) -> str | None:
    """The queues_entry output for an instance of ``tier`` whose queue has ``_QUEUE_URL``."""
    condition, default, entry = conditional(module.outputs["queues_entry"]["value"])
    if holds(condition, tier=tier):
        assert default == "null"
        return None
    queue_url = module.outputs["queue_url"]["value"]  # "${aws_sqs_queue.this.url}"
    template = re.fullmatch(r'"(.*)"', entry)
    assert template, f"queues_entry is not a string template: {entry}"
    rendered = template[1].replace("${var.tier}", tier).replace(queue_url, _QUEUE_URL)
    assert "${" not in rendered, f"queues_entry refers to more than the tier and the queue URL: {entry}"
    return rendered


def test_queues_entry_names_the_tier_and_its_queue_url(module: Configuration) -> None:
    entry = _queues_entry(module, "bulk")
    assert entry is not None
    # Read as the library reads CLOUDJOBS_QUEUES: comma-separated NAME=VALUE pairs.
    (pair,) = entry.split(",")
    name, _, value = pair.partition("=")
    assert (name, value) == ("bulk", _QUEUE_URL)


def test_default_tier_has_no_queues_entry_its_queue_is_the_queue_url(module: Configuration) -> None:
    # "default" is reserved for CLOUDJOBS_QUEUE_URL (or _NAME), which environment already sets.
    assert _queues_entry(module, "default") is None
    assert "CLOUDJOBS_QUEUE_URL=aws_sqs_queue.this.url" in _compact(module.outputs["environment"]["value"])


def test_every_cloudjobs_variable_in_terraform_is_a_setting() -> None:
    for path in TERRAFORM.rglob("*.tf"):
        for variable in re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]+", path.read_text(encoding="utf-8")):
            setting = variable.removeprefix(ENV_PREFIX).lower()
            assert setting in Settings.model_fields, f"{path.name}: {variable} is not a cloudjobs setting"


def test_every_variable_is_described_and_precisely_typed(module: Configuration) -> None:
    for name, variable in module.variables.items():
        assert variable.get("description"), name
        assert "type" in variable, name
        assert not re.search(r"\bany\b", variable["type"]), name


@pytest.mark.parametrize(
    "versions", sorted(TERRAFORM.rglob("versions.tf")), ids=lambda path: path.parent.name
)
def test_aws_provider_is_pinned_to_a_6x_minor_that_accepts_1_mib_messages(versions: Path) -> None:
    configuration = parse(versions.parent)
    (terraform,) = configuration.terraform
    (providers,) = terraform["required_providers"]
    assert providers["aws"]["source"] == "hashicorp/aws"
    match = re.fullmatch(r"~> 6\.(\d+)", providers["aws"]["version"])
    assert match, providers["aws"]["version"]
    assert int(match[1]) >= FIRST_PROVIDER_MINOR_WITH_1_MIB_MESSAGES


def test_main_is_divided_by_80_column_banners() -> None:
    lines = (MODULE / "main.tf").read_text(encoding="utf-8").splitlines()
    titles = [lines[index + 1].removeprefix("# ") for index, line in enumerate(lines) if line == "#" * 80][
        ::2
    ]
    assert {"Queue", "Dead-letter queue", "Idempotency table", "IAM"} <= set(titles)


# ---------------------------------------------------------------------------------------------------
# Examples and checkov skips
# ---------------------------------------------------------------------------------------------------


_EXAMPLE_DIRECTORIES = sorted(path.parent for path in EXAMPLES.glob("*/main.tf"))


@pytest.mark.parametrize("example", _EXAMPLE_DIRECTORIES, ids=lambda path: path.name)
def test_examples_call_the_module_by_relative_path(example: Path) -> None:
    calls = parse(example).modules
    assert calls
    for name, call in calls.items():
        assert call["source"] == "../../modules/cloudjobs-queue", name


# priority-tiers: three tiers of one app, one table, one function, one policy per role.


@pytest.fixture(scope="module")
def tiers() -> Configuration:
    return parse(EXAMPLES / "priority-tiers")


def _tier_of(module: Configuration, call: dict[str, Any]) -> str:
    tier = call.get("tier", module.variables["tier"]["default"])
    assert isinstance(tier, str)
    return tier


def _module_by_tier(module: Configuration, tiers: Configuration) -> dict[str, str]:
    """The example's module calls by the tier each is an instance of."""
    return {_tier_of(module, call): name for name, call in tiers.modules.items()}


def test_priority_tiers_are_three_instances_sharing_one_table(
    module: Configuration, tiers: Configuration
) -> None:
    by_tier = _module_by_tier(module, tiers)
    assert sorted(by_tier) == ["bulk", "critical", "default"]
    assert len(tiers.modules) == 3
    creating = [
        name
        for name, call in tiers.modules.items()
        if call.get("create_table", module.variables["create_table"]["default"])
    ]
    assert creating == [by_tier["default"]]
    for name, call in tiers.modules.items():
        if name not in creating:
            assert call["idempotency_table_arn"] == f"${{module.{by_tier['default']}.idempotency_table_arn}}"
    assert not [resource for resource in tiers.resources if resource.startswith("aws_dynamodb_table.")]
    # A shared table keeps its creator's key, and each instance's policies name their own.
    assert len({call.get("kms_key_arn") for call in tiers.modules.values()}) == 1


def test_priority_tiers_function_consumes_every_queue_reporting_batch_item_failures(
    module: Configuration, tiers: Configuration
) -> None:
    (function,) = [name for name in tiers.resources if name.startswith("aws_lambda_function.")]
    mappings = [call["lambda_consumer"] for call in tiers.modules.values() if "lambda_consumer" in call]
    assert len(mappings) == 3
    for mapping in mappings:
        assert mapping["function_name"] == f"${{{function}.function_name}}"
        assert mapping["function_timeout_seconds"] == f"${{{function}.timeout}}"
    # Each instance's mapping is the module's, which reports batch item failures.
    module_mapping = module.resources["aws_lambda_event_source_mapping.this"]
    assert module_mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert module_mapping["count"] == "${var.lambda_consumer == null ? 0 : 1}"
    # The function reserves what the three mappings may use together, each its tier's share.
    assert tiers.resources[function]["reserved_concurrent_executions"] == (
        "${sum(values(local.maximum_concurrency))}"
    )
    shares = sorted(mapping["maximum_concurrency"] for mapping in mappings)
    assert shares == sorted(
        f"${{local.maximum_concurrency.{tier}}}" for tier in tiers.locals["maximum_concurrency"]
    )
    assert tiers.locals["maximum_concurrency"]["critical"] > tiers.locals["maximum_concurrency"]["bulk"]


def _consumer_roles(tiers: Configuration) -> dict[str, str]:
    """The function's role and the ECS task role, by who assumes them."""
    (function,) = [body for name, body in tiers.resources.items() if name.startswith("aws_lambda_function.")]
    worker = [
        name
        for name, body in tiers.resources.items()
        if name.startswith("aws_iam_role.")
        and "ecs-tasks.amazonaws.com" in repr(tiers.data[_document(body["assume_role_policy"])])
    ]
    (worker_role,) = worker
    function_role = re.fullmatch(r"\$\{(aws_iam_role\.\w+)\.arn\}", function["role"])
    assert function_role, function["role"]
    return {"lambda": function_role[1], "worker": worker_role}


def _document(reference: str) -> str:
    match = re.fullmatch(r"\$\{data\.(aws_iam_policy_document\.\w+)\.json\}", reference)
    assert match, reference
    return match[1]


@pytest.mark.parametrize("consumer", ["lambda", "worker"])
def test_priority_tiers_consumer_roles_are_granted_every_tiers_queue_dlq_and_table(
    module: Configuration, tiers: Configuration, consumer: str
) -> None:
    role = _consumer_roles(tiers)[consumer]
    documents = [
        tiers.data[_document(body["policy"])]
        for name, body in tiers.resources.items()
        if name.startswith("aws_iam_role_policy.") and body["role"] == f"${{{role}.id}}"
    ]
    merged = [
        reference for document in documents for reference in document.get("source_policy_documents", [])
    ]
    granted_tiers = {
        _tier_of(module, tiers.modules[match[1]])
        for reference in merged
        if (match := re.fullmatch(r"\$\{module\.(\w+)\.consumer_policy_json\}", reference))
    }
    assert granted_tiers == {"critical", "default", "bulk"}
    # Each tier's consumer policy covers its queue, its dead-letter queue and the (shared) table...
    resources = {
        resource
        for statement in statements(module.data["aws_iam_policy_document.consumer"])
        for resource in statement.resources
    }
    assert {_QUEUE, "${aws_sqs_queue.dlq.arn}", _TABLE, _INDEX} <= resources
    # ...and the three merge into one document without a statement id twice.
    sids = [sid for tier in granted_tiers for sid in _sids(module, "consumer", tier)]
    assert len(sids) == len(set(sids))


def test_priority_tiers_environment_is_the_default_tiers_with_the_others_in_cloudjobs_queues(
    module: Configuration, tiers: Configuration
) -> None:
    by_tier = _module_by_tier(module, tiers)
    (function,) = [body for name, body in tiers.resources.items() if name.startswith("aws_lambda_function.")]
    (environment,) = function["environment"]
    expression = _compact(tiers.resolve(environment["variables"]))
    assert expression.startswith(f"${{merge(module.{by_tier['default']}.environment,"), expression
    queues = re.search(r"CLOUDJOBS_QUEUES=join\(\",\",\[([^\]]*)\]\)", expression)
    assert queues, expression
    listed = queues[1].split(",")
    assert sorted(listed) == sorted(f"module.{by_tier[tier]}.queues_entry" for tier in ("critical", "bulk"))
    # Producers get the same settings.
    assert tiers.outputs["environment"]["value"] == environment["variables"]


def test_module_skips_only_checks_justified_inline_and_listed_in_its_readme() -> None:
    readme = (MODULE / "README.md").read_text(encoding="utf-8")
    skips = re.findall(
        r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?",
        "\n".join(path.read_text(encoding="utf-8") for path in MODULE.glob("*.tf")),
    )
    for check, reason in skips:
        assert reason.strip(), f"{check} is skipped without a reason"
        assert f"`{check}`" in readme, f"{check} is skipped but not listed in the README"


def test_examples_skip_checks_only_through_the_allow_list() -> None:
    for path in EXAMPLES.rglob("*.tf"):
        assert "checkov:skip" not in path.read_text(encoding="utf-8"), path
    for line in (EXAMPLES / "checkov-skips.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"CKV2?_[A-Z0-9_]+:\s*\S.*", line), f"an entry needs a reason: {line}"
