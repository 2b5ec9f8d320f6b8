locals {
  # Names shared with cloudjobs.provisioning; tests/infra fails if they drift apart.
  fifo_suffix = ".fifo"
  dlq_suffix  = "-dlq"
  base_name   = trimsuffix(var.name, local.fifo_suffix)
  dlq_name    = "${local.base_name}${local.dlq_suffix}${var.fifo_queue ? local.fifo_suffix : ""}"

  created_table_name     = coalesce(var.idempotency_table_name, "${local.base_name}-idempotency")
  table_partition_key    = "pk"
  table_job_id_attribute = "job_id"
  table_job_id_index     = "job_id-index"
  table_ttl_attribute    = "expires_at"

  uses_sqs_managed_sse = var.kms_key_arn == null

  # EventBridge Scheduler: the app's schedule group, its schedules (recurring ones keep their names
  # from code) and the one-time schedules of delayed jobs, whose names cloudjobs starts so.
  schedule_group_name = local.base_name
  schedules_arn       = "arn:${data.aws_partition.current.partition}:scheduler:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:schedule/${local.schedule_group_name}/*"
  delay_schedules_arn = "arn:${data.aws_partition.current.partition}:scheduler:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:schedule/${local.schedule_group_name}/cloudjobs.delay.*"
  scheduler_role_arn  = one(aws_iam_role.scheduler[*].arn)

  # Payload bucket: cloudjobs writes bodies under cloudjobs/; AWS's extended clients anywhere.
  payload_bucket_name = coalesce(var.payload_bucket_name, "${local.base_name}-payloads")
  payload_bucket_arn  = "arn:${data.aws_partition.current.partition}:s3:::${local.payload_bucket_name}"
  payload_objects_arn = "${local.payload_bucket_arn}/cloudjobs/*"
  payload_any_arn     = "${local.payload_bucket_arn}/*"
}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

################################################################################
# Queue
################################################################################

resource "aws_sqs_queue" "this" {
  name       = var.name
  fifo_queue = var.fifo_queue

  content_based_deduplication = var.fifo_queue ? var.content_based_deduplication : null
  # High-throughput mode is these two settings together, as AWS defines it.
  deduplication_scope   = var.fifo_queue ? (var.high_throughput_fifo ? "messageGroup" : "queue") : null
  fifo_throughput_limit = var.fifo_queue ? (var.high_throughput_fifo ? "perMessageGroupId" : "perQueue") : null

  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  max_message_size           = var.max_message_size
  delay_seconds              = var.delay_seconds

  # The DLQ does not refer back to this queue here: its redrive allow policy is a
  # separate resource, which keeps the two queues free of a reference cycle.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  # SSE-SQS unless a customer-managed key is given (the two exclude each other).
  sqs_managed_sse_enabled           = local.uses_sqs_managed_sse ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.uses_sqs_managed_sse ? null : var.kms_data_key_reuse_period_seconds

  tags = var.tags
}

data "aws_iam_policy_document" "queue" {
  source_policy_documents = var.source_policy_documents

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.this.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "this" {
  queue_url = aws_sqs_queue.this.id
  policy    = data.aws_iam_policy_document.queue.json
}

################################################################################
# Dead-letter queue
################################################################################

resource "aws_sqs_queue" "dlq" {
  name       = local.dlq_name
  fifo_queue = var.fifo_queue

  content_based_deduplication = var.fifo_queue ? var.content_based_deduplication : null

  # Same visibility and size as the queue (a message must fit both); no delay.
  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = var.dlq_retention_seconds
  max_message_size           = var.max_message_size

  sqs_managed_sse_enabled           = local.uses_sqs_managed_sse ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.uses_sqs_managed_sse ? null : var.kms_data_key_reuse_period_seconds

  tags = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.this.arn]
  })
}

data "aws_iam_policy_document" "dlq" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dlq.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq.json
}

################################################################################
# Idempotency table
################################################################################

resource "aws_dynamodb_table" "idempotency" {
  #checkov:skip=CKV_AWS_119:A customer-managed key is optional (kms_key_arn); without one the table is still encrypted, with the AWS managed key for DynamoDB.
  # An app's tiers share one table: the other tiers' instances are given its ARN.
  count = var.create_table ? 1 : 0

  name                        = local.created_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = local.table_partition_key
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = local.table_partition_key
    type = "S"
  }

  attribute {
    name = local.table_job_id_attribute
    type = "S"
  }

  # Job status by job id: the records are keyed by idempotency key.
  global_secondary_index {
    name            = local.table_job_id_index
    hash_key        = local.table_job_id_attribute
    projection_type = "ALL"
  }

  # TTL deletion is lazy (often within days): cloudjobs checks expiry itself and
  # uses TTL only to keep the table small.
  ttl {
    enabled        = true
    attribute_name = local.table_ttl_attribute
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = var.tags
}

locals {
  # The table cloudjobs uses, created here or shared: the policies, outputs and
  # environment name it through these two alone. A table ARN ends in "table/<name>".
  table_arn  = var.create_table ? aws_dynamodb_table.idempotency[0].arn : var.idempotency_table_arn
  table_name = var.create_table ? aws_dynamodb_table.idempotency[0].name : split("/", var.idempotency_table_arn)[1]
}

################################################################################
# IAM
################################################################################

locals {
  table_index_arn = "${local.table_arn}/index/${local.table_job_id_index}"
  # Statement ids end with the tier ("ConsumeJobsCritical"), so one role's policy can merge the
  # documents of an app's tiers: IAM and source_policy_documents refuse a Sid twice, and a Sid
  # holds only letters and digits. The default tier keeps the plain ids.
  sid_suffix = var.tier == "default" ? "" : join("", [for word in regexall("[a-z0-9]+", var.tier) : title(word)])
  # The key may be used only through the services that encrypt with it.
  kms_via_services = [
    "sqs.${data.aws_region.current.region}.amazonaws.com",
    "dynamodb.${data.aws_region.current.region}.amazonaws.com",
    "s3.${data.aws_region.current.region}.amazonaws.com",
  ]
}

data "aws_iam_policy_document" "producer" {
  statement {
    sid       = "EnqueueJobs${local.sid_suffix}"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [aws_sqs_queue.this.arn]
  }

  # With status tracking a job's record exists from its enqueue (one PutItem), and jobs.status reads
  # it back by job id (a Query on the index), as a 202-Accepted service does.
  dynamic "statement" {
    for_each = var.status_tracking ? [true] : []
    content {
      sid       = "WriteJobStatus${local.sid_suffix}"
      actions   = ["dynamodb:PutItem"]
      resources = [local.table_arn]
    }
  }

  dynamic "statement" {
    for_each = var.status_tracking ? [true] : []
    content {
      sid       = "ReadJobStatus${local.sid_suffix}"
      actions   = ["dynamodb:Query"]
      resources = [local.table_index_arn]
    }
  }

  # A unique job is a reservation on the table before its send (UpdateItem, conditional); with
  # unique_until="finished" a repeat reads the first job's record (GetItem), and the job's pending
  # record is written at enqueue (PutItem).
  dynamic "statement" {
    for_each = var.unique_jobs ? [true] : []
    content {
      sid       = "ReserveUniqueJobs${local.sid_suffix}"
      actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
      resources = [local.table_arn]
    }
  }

  # jobs.result polls a job's record by key (GetItem) after finding it by job id (Query on the
  # index) or cancellation marker (GetItem); enqueue(track_status=True) writes the pending record.
  dynamic "statement" {
    for_each = var.job_results ? [true] : []
    content {
      sid       = "ReadJobResults${local.sid_suffix}"
      actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
      resources = [local.table_arn]
    }
  }

  dynamic "statement" {
    for_each = var.job_results ? [true] : []
    content {
      sid       = "FindJobResults${local.sid_suffix}"
      actions   = ["dynamodb:Query"]
      resources = [local.table_index_arn]
    }
  }

  # A job's body too large for the queue goes to the payload bucket.
  dynamic "statement" {
    for_each = var.payload_bucket ? [true] : []
    content {
      sid       = "StorePayloads${local.sid_suffix}"
      actions   = ["s3:PutObject"]
      resources = [local.payload_objects_arn]
    }
  }

  # A job due later than 15 minutes waits in a one-time schedule (CLOUDJOBS_LONG_DELAYS=eventbridge)
  # that the scheduler's role sends when due; creating it passes that role.
  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "ScheduleJobs${local.sid_suffix}"
      actions   = ["scheduler:CreateSchedule"]
      resources = [local.delay_schedules_arn]
    }
  }

  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "PassSchedulerRole${local.sid_suffix}"
      actions   = ["iam:PassRole"]
      resources = [local.scheduler_role_arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["scheduler.amazonaws.com"]
      }
    }
  }

  # Sending to an encrypted queue needs a data key, and KMS checks Decrypt too.
  dynamic "statement" {
    for_each = local.uses_sqs_managed_sse ? [] : [true]
    content {
      sid       = "UseJobsKey${local.sid_suffix}"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = local.kms_via_services
      }
    }
  }
}

data "aws_iam_policy_document" "consumer" {
  # SendMessage on the queue itself: a job deferred near the redrive threshold is re-sent (same job
  # id) rather than left to be dead-lettered, and handlers enqueue follow-up jobs.
  statement {
    sid = "ConsumeJobs${local.sid_suffix}"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
      "sqs:SendMessage",
    ]
    resources = [aws_sqs_queue.this.arn]
  }

  # The consumer dead-letters poison messages itself, with a reason attached.
  statement {
    sid       = "DeadLetterJobs${local.sid_suffix}"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  # UpdateItem takes, renews and settles leases (and counts a flow's children, and gates its parent);
  # BatchGetItem reads a received batch's cancellation markers (and a flow parent's child results)
  # and GetItem a running job's; PutItem writes the pending record of a job a handler enqueues with
  # status tracking on (or a flow's parent, sent by its last child).
  statement {
    sid       = "TrackJobs${local.sid_suffix}"
    actions   = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [local.table_arn]
  }

  statement {
    sid       = "FindJobsById${local.sid_suffix}"
    actions   = ["dynamodb:Query"]
    resources = [local.table_index_arn]
  }

  # Pointer messages' bodies are read back (any key: AWS's extended clients choose their own), and
  # the follow-up jobs handlers enqueue may be stored; with payload_delete, a completed job's is deleted.
  dynamic "statement" {
    for_each = var.payload_bucket ? [true] : []
    content {
      sid       = "ReadPayloads${local.sid_suffix}"
      actions   = ["s3:GetObject"]
      resources = [local.payload_any_arn]
    }
  }

  dynamic "statement" {
    for_each = var.payload_bucket ? [true] : []
    content {
      sid       = "StorePayloads${local.sid_suffix}"
      actions   = ["s3:PutObject"]
      resources = [local.payload_objects_arn]
    }
  }

  dynamic "statement" {
    for_each = var.payload_bucket && var.payload_delete ? [true] : []
    content {
      sid       = "DeletePayloads${local.sid_suffix}"
      actions   = ["s3:DeleteObject"]
      resources = [local.payload_any_arn]
    }
  }

  # A job due later than 15 minutes waits in a one-time schedule (CLOUDJOBS_LONG_DELAYS=eventbridge)
  # that the scheduler's role sends when due (a handler enqueues it; cancelling deletes it);
  # creating it passes that role.
  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "ScheduleJobs${local.sid_suffix}"
      actions   = ["scheduler:CreateSchedule", "scheduler:DeleteSchedule"]
      resources = [local.delay_schedules_arn]
    }
  }

  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "PassSchedulerRole${local.sid_suffix}"
      actions   = ["iam:PassRole"]
      resources = [local.scheduler_role_arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["scheduler.amazonaws.com"]
      }
    }
  }

  # Receiving decrypts; sending to the dead-letter queue needs a data key.
  dynamic "statement" {
    for_each = local.uses_sqs_managed_sse ? [] : [true]
    content {
      sid       = "UseJobsKey${local.sid_suffix}"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = local.kms_via_services
      }
    }
  }
}

data "aws_iam_policy_document" "operator" {
  statement {
    sid = "ManageDeadLetters${local.sid_suffix}"
    actions = [
      "sqs:CancelMessageMoveTask",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ListMessageMoveTasks",
      "sqs:PurgeQueue",
      "sqs:ReceiveMessage",
      "sqs:StartMessageMoveTask",
    ]
    resources = [aws_sqs_queue.dlq.arn]
  }

  # Sending dead letters back, one by one or through a message move task.
  statement {
    sid       = "RequeueJobs${local.sid_suffix}"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    resources = [aws_sqs_queue.this.arn]
  }

  # Cancelling a job: an UpdateItem of its record, or a PutItem of a marker when it has none, entered
  # in the cancellation register (a GetItem and an UpdateItem of one item); the record is found by
  # job id on the index, below.
  statement {
    sid       = "CancelJobs${local.sid_suffix}"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [local.table_arn]
  }

  statement {
    sid       = "FindJobsById${local.sid_suffix}"
    actions   = ["dynamodb:Query"]
    resources = [local.table_index_arn]
  }

  # GetMetricData has no resource-level permissions: IAM accepts only "*" for it
  # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html).
  # It reads ApproximateAgeOfOldestMessage; it cannot change anything.
  statement {
    sid       = "ReadQueueMetrics${local.sid_suffix}"
    actions   = ["cloudwatch:GetMetricData"]
    resources = ["*"]
  }

  # A purge deletes the bodies of the pointer messages it deletes.
  dynamic "statement" {
    for_each = var.payload_bucket ? [true] : []
    content {
      sid       = "PurgePayloads${local.sid_suffix}"
      actions   = ["s3:DeleteObject"]
      resources = [local.payload_any_arn]
    }
  }

  # Cancelling a delayed job deletes its one-time schedule.
  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "CancelScheduledJobs${local.sid_suffix}"
      actions   = ["scheduler:DeleteSchedule"]
      resources = [local.delay_schedules_arn]
    }
  }

  # cloudjobs schedules sync: the group's recurring schedules made to match the code. ListSchedules
  # has no resource-level permissions: IAM accepts only "*" for it
  # (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridgescheduler.html).
  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "SyncSchedules${local.sid_suffix}"
      actions   = ["scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule", "scheduler:UpdateSchedule"]
      resources = [local.schedules_arn]
    }
  }

  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "ListSchedules${local.sid_suffix}"
      actions   = ["scheduler:ListSchedules"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.eventbridge_scheduler ? [true] : []
    content {
      sid       = "PassSchedulerRole${local.sid_suffix}"
      actions   = ["iam:PassRole"]
      resources = [local.scheduler_role_arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["scheduler.amazonaws.com"]
      }
    }
  }

  # Receiving from the dead-letter queue decrypts; requeueing needs a data key.
  dynamic "statement" {
    for_each = local.uses_sqs_managed_sse ? [] : [true]
    content {
      sid       = "UseJobsKey${local.sid_suffix}"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = local.kms_via_services
      }
    }
  }
}

################################################################################
# Payload bucket
################################################################################

resource "aws_s3_bucket" "payloads" {
  count = var.payload_bucket ? 1 : 0

  # checkov:skip=CKV_AWS_18:Bodies are written and read by the queue's own roles; CloudTrail data events audit them where needed.
  # checkov:skip=CKV_AWS_144:Bodies live as long as their messages (days); a replica in another region outlives no queue.
  # checkov:skip=CKV_AWS_21:A body is written once under its job's key; versions would keep purged and expired bodies.
  # checkov:skip=CKV2_AWS_62:Nothing reacts to a body being stored: the queue's message is the event.
  # checkov:skip=CKV_AWS_145:SSE-S3 unless kms_key_arn is given, as for the queues (see the encryption configuration).
  bucket = local.payload_bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_public_access_block" "payloads" {
  count = var.payload_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.payloads[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "payloads" {
  count = var.payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "payloads" {
  count = var.payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.uses_sqs_managed_sse ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = !local.uses_sqs_managed_sse
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "payloads" {
  count = var.payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id
  rule {
    id     = "expire-bodies"
    status = "Enabled"
    filter {}
    expiration {
      days = var.payload_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "payloads" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.payload_bucket_arn, local.payload_any_arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "payloads" {
  count = var.payload_bucket ? 1 : 0

  bucket = aws_s3_bucket.payloads[0].id
  policy = data.aws_iam_policy_document.payloads.json
}

################################################################################
# EventBridge Scheduler
################################################################################

resource "aws_scheduler_schedule_group" "this" {
  count = var.eventbridge_scheduler ? 1 : 0

  name = local.schedule_group_name
  tags = var.tags
}

# The scheduler assumes this role to send a schedule's message: only schedules of this account.
data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    sid     = "SchedulerAssumes"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count = var.eventbridge_scheduler ? 1 : 0

  name               = "${local.base_name}-scheduler"
  description        = "EventBridge Scheduler sends the scheduled jobs of ${var.name} with this role."
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = var.tags
}

# SendMessage on the app's queues, and nothing else (the universal target calls only SendMessage).
data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "SendScheduledJobs"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.this.arn]
  }

  dynamic "statement" {
    for_each = length(var.scheduler_queue_arns) > 0 ? [true] : []
    content {
      sid       = "SendScheduledJobsToTiers"
      actions   = ["sqs:SendMessage"]
      resources = var.scheduler_queue_arns
    }
  }

  # Sending to an encrypted queue needs a data key, and KMS checks Decrypt too.
  dynamic "statement" {
    for_each = local.uses_sqs_managed_sse ? [] : [true]
    content {
      sid       = "UseJobsKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["sqs.${data.aws_region.current.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "scheduler" {
  count = var.eventbridge_scheduler ? 1 : 0

  name   = "send-scheduled-jobs"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler.json
}

################################################################################
# Lambda consumer
################################################################################

resource "aws_lambda_event_source_mapping" "this" {
  count = var.lambda_consumer == null ? 0 : 1

  event_source_arn                   = aws_sqs_queue.this.arn
  function_name                      = var.lambda_consumer.function_name
  enabled                            = var.lambda_consumer.enabled
  batch_size                         = var.lambda_consumer.batch_size
  maximum_batching_window_in_seconds = var.lambda_consumer.maximum_batching_window_in_seconds
  # cloudjobs returns batchItemFailures: only the failed records come back.
  function_response_types = ["ReportBatchItemFailures"]

  dynamic "scaling_config" {
    for_each = var.lambda_consumer.maximum_concurrency == null ? [] : [var.lambda_consumer.maximum_concurrency]
    content {
      maximum_concurrency = scaling_config.value
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      # AWS's guidance: a shorter visibility lets a batch that is still running (or
      # being retried after throttling) reappear and run twice.
      condition     = var.visibility_timeout_seconds >= 6 * var.lambda_consumer.function_timeout_seconds
      error_message = "visibility_timeout_seconds must be at least six times lambda_consumer.function_timeout_seconds."
    }
  }
}

################################################################################
# Alarms
################################################################################

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  count = var.create_alarms ? 1 : 0

  alarm_name        = "${local.base_name}${local.dlq_suffix}-not-empty"
  alarm_description = "Jobs reached the dead-letter queue ${local.dlq_name}: inspect them, then move them back or purge them."

  namespace   = "AWS/SQS"
  metric_name = "ApproximateNumberOfMessagesVisible"
  dimensions = {
    QueueName = aws_sqs_queue.dlq.name
  }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # SQS stops sending metrics for a queue that has been idle for six hours.
  treat_missing_data = "notBreaching"

  alarm_actions = var.alarm_actions
  ok_actions    = var.ok_actions
  tags          = var.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  count = var.create_alarms ? 1 : 0

  alarm_name        = "${local.base_name}-oldest-message-age"
  alarm_description = "The oldest job in ${var.name} has waited more than ${var.oldest_message_age_alarm_seconds} s: consumers are down or too slow."

  namespace   = "AWS/SQS"
  metric_name = "ApproximateAgeOfOldestMessage"
  dimensions = {
    QueueName = aws_sqs_queue.this.name
  }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.oldest_message_age_alarm_seconds
  treat_missing_data  = "notBreaching"

  alarm_actions = var.alarm_actions
  ok_actions    = var.ok_actions
  tags          = var.tags
}
