################################################################################
# Queue
################################################################################

output "queue_url" {
  description = "URL of the job queue (CLOUDJOBS_QUEUE_URL)."
  value       = aws_sqs_queue.this.url
}

output "queue_name" {
  description = "Name of the job queue (CLOUDJOBS_QUEUE_NAME)."
  value       = aws_sqs_queue.this.name
}

output "queue_arn" {
  description = "ARN of the job queue."
  value       = aws_sqs_queue.this.arn
}

################################################################################
# Dead-letter queue
################################################################################

output "dlq_url" {
  description = "URL of the dead-letter queue (CLOUDJOBS_DLQ_URL)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_name" {
  description = "Name of the dead-letter queue: \"<name>-dlq\", or \"<name>-dlq.fifo\" for FIFO queues."
  value       = aws_sqs_queue.dlq.name
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

################################################################################
# Idempotency table
################################################################################

output "idempotency_table" {
  description = "Name of the DynamoDB idempotency and status table (CLOUDJOBS_IDEMPOTENCY_TABLE): the one created here, or the shared one of idempotency_table_arn when create_table is false."
  value       = local.table_name
}

output "idempotency_table_arn" {
  description = "ARN of the idempotency and status table (created here, or shared); give it to the other tiers' instances as idempotency_table_arn."
  value       = local.table_arn
}

################################################################################
# Settings
################################################################################

output "status_tracking" {
  description = "Whether producers write a pending status record for every job they enqueue (CLOUDJOBS_STATUS_TRACKING)."
  value       = var.status_tracking
}

output "queues_entry" {
  description = "This queue's entry in its app's CLOUDJOBS_QUEUES: \"<tier>=<queue URL>\", for example \"bulk=https://sqs.eu-west-1.amazonaws.com/123456789012/orders-bulk\". Null for the \"default\" tier: the default queue is CLOUDJOBS_QUEUE_URL (queue_url, in environment) and is never listed in CLOUDJOBS_QUEUES. An app's CLOUDJOBS_QUEUES is its other tiers' entries joined with commas."
  value       = var.tier == "default" ? null : "${var.tier}=${aws_sqs_queue.this.url}"
}

output "environment" {
  description = "The CLOUDJOBS_* variables that point a producer, worker or Lambda function at these resources, this queue as the app's default queue; each one is the output of the same name (CLOUDJOBS_QUEUE_URL is queue_url). CLOUDJOBS_STATUS_TRACKING is present only when status_tracking is on; CLOUDJOBS_LONG_DELAYS, CLOUDJOBS_SCHEDULES_MODE, CLOUDJOBS_SCHEDULE_GROUP and CLOUDJOBS_SCHEDULER_ROLE_ARN only with eventbridge_scheduler; CLOUDJOBS_PAYLOAD_BUCKET (with CLOUDJOBS_PAYLOAD_KMS_KEY_ID under a customer-managed key, CLOUDJOBS_PAYLOAD_DELETE with payload_delete) only with payload_bucket. An app with tiers takes the default tier's environment and adds CLOUDJOBS_QUEUES, the other tiers' queues_entry joined with commas."
  value = merge(
    {
      CLOUDJOBS_QUEUE_URL         = aws_sqs_queue.this.url
      CLOUDJOBS_DLQ_URL           = aws_sqs_queue.dlq.url
      CLOUDJOBS_IDEMPOTENCY_TABLE = local.table_name
    },
    # The policies grant producers status access only with status_tracking: the setting must follow.
    var.status_tracking ? { CLOUDJOBS_STATUS_TRACKING = "true" } : {},
    var.payload_bucket ? { CLOUDJOBS_PAYLOAD_BUCKET = one(aws_s3_bucket.payloads[*].bucket) } : {},
    var.payload_bucket && !local.uses_sqs_managed_sse ? { CLOUDJOBS_PAYLOAD_KMS_KEY_ID = var.kms_key_arn } : {},
    var.payload_bucket && var.payload_delete ? { CLOUDJOBS_PAYLOAD_DELETE = "true" } : {},
    var.eventbridge_scheduler ? {
      CLOUDJOBS_LONG_DELAYS        = "eventbridge"
      CLOUDJOBS_SCHEDULES_MODE     = "eventbridge"
      CLOUDJOBS_SCHEDULE_GROUP     = one(aws_scheduler_schedule_group.this[*].name)
      CLOUDJOBS_SCHEDULER_ROLE_ARN = local.scheduler_role_arn
    } : {},
  )
}

################################################################################
# EventBridge Scheduler
################################################################################

output "payload_bucket" {
  description = "Name of the payload bucket (CLOUDJOBS_PAYLOAD_BUCKET), or null without payload_bucket."
  value       = one(aws_s3_bucket.payloads[*].bucket)
}

output "payload_kms_key_id" {
  description = "KMS key of stored bodies (CLOUDJOBS_PAYLOAD_KMS_KEY_ID): kms_key_arn, or null for SSE-S3."
  value       = var.kms_key_arn
}

output "payload_delete" {
  description = "Whether consumers delete a completed job's stored body (CLOUDJOBS_PAYLOAD_DELETE)."
  value       = var.payload_bucket && var.payload_delete
}

output "long_delays" {
  description = "How jobs due later than 15 minutes wait (CLOUDJOBS_LONG_DELAYS): \"eventbridge\" with eventbridge_scheduler, else \"hops\"."
  value       = var.eventbridge_scheduler ? "eventbridge" : "hops"
}

output "schedules_mode" {
  description = "Who fires recurring schedules (CLOUDJOBS_SCHEDULES_MODE): \"eventbridge\" with eventbridge_scheduler, else \"self-hosted\"."
  value       = var.eventbridge_scheduler ? "eventbridge" : "self-hosted"
}

output "schedule_group" {
  description = "Name of the EventBridge Scheduler schedule group (CLOUDJOBS_SCHEDULE_GROUP), or null without eventbridge_scheduler."
  value       = one(aws_scheduler_schedule_group.this[*].name)
}

output "scheduler_role_arn" {
  description = "ARN of the role EventBridge Scheduler assumes to send scheduled jobs (CLOUDJOBS_SCHEDULER_ROLE_ARN), or null without eventbridge_scheduler."
  value       = local.scheduler_role_arn
}

################################################################################
# IAM
################################################################################

output "producer_policy_json" {
  description = "IAM policy (JSON) for code that enqueues jobs: send to the queue and, when status_tracking is on, write status records and read them by job id; with unique_jobs, reserve unique jobs on the table; with job_results, wait for results."
  value       = data.aws_iam_policy_document.producer.json
}

output "consumer_policy_json" {
  description = "IAM policy (JSON) for a worker or Lambda consumer: receive, delete and change visibility on the queue, send to the dead-letter queue, and item operations on the table and its job_id index."
  value       = data.aws_iam_policy_document.consumer.json
}

output "operator_policy_json" {
  description = "IAM policy (JSON) for operators: inspect, purge and move dead letters back, find and cancel jobs, read the queue's age metric."
  value       = data.aws_iam_policy_document.operator.json
}

################################################################################
# Lambda consumer
################################################################################

output "lambda_event_source_mapping_uuid" {
  description = "UUID of the Lambda event source mapping, or null without lambda_consumer."
  value       = one(aws_lambda_event_source_mapping.this[*].uuid)
}

################################################################################
# Alarms
################################################################################

output "alarm_arns" {
  description = "ARNs of the CloudWatch alarms by purpose (dlq_not_empty, oldest_message_age); empty when create_alarms is false."
  value = var.create_alarms ? {
    dlq_not_empty      = aws_cloudwatch_metric_alarm.dlq_not_empty[0].arn
    oldest_message_age = aws_cloudwatch_metric_alarm.oldest_message_age[0].arn
  } : {}
}
