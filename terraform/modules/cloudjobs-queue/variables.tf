################################################################################
# Queue
################################################################################

variable "name" {
  description = "Name of the job queue (CLOUDJOBS_QUEUE_NAME). Letters, digits, hyphens and underscores; a FIFO queue's name ends with \".fifo\". The dead-letter queue is named \"<name>-dlq\" (\"<name>-dlq.fifo\" for FIFO queues), and that name must fit in SQS's 80 characters."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+(\\.fifo)?$", var.name))
    error_message = "The name may hold only letters, digits, hyphens and underscores, optionally followed by \".fifo\"."
  }

  validation {
    condition     = endswith(var.name, ".fifo") == var.fifo_queue
    error_message = "The name ends with \".fifo\" exactly when fifo_queue is true (SQS requires it, and cloudjobs derives one from the other)."
  }

  validation {
    # The dead-letter queue's name is the longest: "-dlq" is inserted before ".fifo".
    condition     = length(var.name) + length("-dlq") <= 80
    error_message = "The name is too long: the dead-letter queue's name (\"<name>-dlq\") must fit in SQS's 80 characters."
  }
}

variable "tier" {
  description = "The queue's name within its app, which can have several queues (tiers such as \"critical\" and \"bulk\"). \"default\" (the default) is the app's default queue, configured by CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME; any other tier is configured by its entry in CLOUDJOBS_QUEUES (the queues_entry output). A lowercase letter, then lowercase letters, digits, hyphens or underscores, so that it never holds the \",\" and \"=\" that separate entries. The IAM statement ids of a tier other than \"default\" end with its words capitalised (\"bulk-low\": \"ConsumeJobsBulkLow\"), so the policies of an app's tiers merge into one document."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_-]*$", var.tier))
    error_message = "tier must start with a lowercase letter and hold only lowercase letters, digits, hyphens and underscores."
  }
}

variable "fifo_queue" {
  description = "Create FIFO queues (the dead-letter queue of a FIFO queue is FIFO too). Messages then need a MessageGroupId; order holds within a group."
  type        = bool
  default     = false
}

variable "content_based_deduplication" {
  description = "FIFO only: deduplicate messages sent within SQS's 5-minute interval on a SHA-256 hash of their body, instead of on an explicit MessageDeduplicationId."
  type        = bool
  default     = false

  validation {
    condition     = !var.content_based_deduplication || var.fifo_queue
    error_message = "Only FIFO queues deduplicate: set fifo_queue = true or leave content_based_deduplication false."
  }
}

variable "high_throughput_fifo" {
  description = "FIFO only: high-throughput mode, which deduplicates per message group and applies the throughput quota per message group instead of per queue."
  type        = bool
  default     = false

  validation {
    condition     = !var.high_throughput_fifo || var.fifo_queue
    error_message = "High-throughput mode applies to FIFO queues only."
  }
}

variable "visibility_timeout_seconds" {
  description = "Default visibility timeout of the queue and its dead-letter queue, in seconds (0-43,200, i.e. up to 12 hours). With a Lambda consumer it must be at least six times the function's timeout. Matches cloudjobs.provisioning.DEFAULT_VISIBILITY_TIMEOUT_SECONDS by default."
  type        = number
  default     = 30

  validation {
    condition     = floor(var.visibility_timeout_seconds) == var.visibility_timeout_seconds && var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be a whole number of seconds from 0 to 43200 (12 hours)."
  }
}

variable "delay_seconds" {
  description = "Queue-level delivery delay for every new message, in seconds (0-900, i.e. up to 15 minutes). Not applied to the dead-letter queue."
  type        = number
  default     = 0

  validation {
    condition     = floor(var.delay_seconds) == var.delay_seconds && var.delay_seconds >= 0 && var.delay_seconds <= 900
    error_message = "delay_seconds must be a whole number of seconds from 0 to 900 (15 minutes)."
  }
}

variable "message_retention_seconds" {
  description = "How long the queue keeps a message, in seconds (60 s to 14 days = 1,209,600 s; SQS's default is 4 days = 345,600 s). Must be shorter than dlq_retention_seconds."
  type        = number
  default     = 345600

  validation {
    condition     = floor(var.message_retention_seconds) == var.message_retention_seconds && var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be a whole number of seconds from 60 to 1209600 (14 days)."
  }
}

variable "max_message_size" {
  description = "Largest message the queue accepts, in bytes: 1,024 (1 KiB) to 1,048,576 (1 MiB, SQS's default for new queues). Counts the body plus message attribute names, types and values."
  type        = number
  default     = 1048576

  validation {
    condition     = floor(var.max_message_size) == var.max_message_size && var.max_message_size >= 1024 && var.max_message_size <= 1048576
    error_message = "max_message_size must be a whole number of bytes from 1024 (1 KiB) to 1048576 (1 MiB)."
  }
}

variable "source_policy_documents" {
  description = "Extra IAM policy documents (JSON) merged into the job queue's resource policy, for example to let an SNS topic or EventBridge send to it. The statement that denies requests without TLS is always added."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags applied to every resource the module creates."
  type        = map(string)
  default     = {}
}

################################################################################
# Dead-letter queue
################################################################################

variable "max_receive_count" {
  description = "Receives after which SQS moves a message to the dead-letter queue (1-1,000). Every receive counts, including one whose message a stopping worker releases unstarted."
  type        = number
  default     = 5

  validation {
    condition     = floor(var.max_receive_count) == var.max_receive_count && var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be a whole number from 1 to 1000."
  }
}

variable "dlq_retention_seconds" {
  description = "How long the dead-letter queue keeps a message, in seconds (at most 14 days = 1,209,600 s, the default). A standard message keeps its original enqueue time when it moves, so this must be longer than message_retention_seconds."
  type        = number
  default     = 1209600

  validation {
    condition     = floor(var.dlq_retention_seconds) == var.dlq_retention_seconds && var.dlq_retention_seconds >= 60 && var.dlq_retention_seconds <= 1209600
    error_message = "dlq_retention_seconds must be a whole number of seconds from 60 to 1209600 (14 days)."
  }

  validation {
    condition     = var.dlq_retention_seconds > var.message_retention_seconds
    error_message = "dlq_retention_seconds must be longer than message_retention_seconds: a moved message keeps its enqueue time and would expire early in the dead-letter queue."
  }
}

################################################################################
# Encryption
################################################################################

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for the queues and the table. Null (the default) encrypts the queues with SQS-managed keys (SSE-SQS) and the table with the AWS managed key for DynamoDB. An ARN, not an alias, so the IAM policy outputs can name the key. With create_table = false the shared table keeps the key it was created with, and the policies name this one: give every tier of an app the same key (or none)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias or a key id."
  }
}

variable "kms_data_key_reuse_period_seconds" {
  description = "With kms_key_arn: how long SQS reuses a data key before calling KMS again, in seconds (60-86,400; 300 by default). Longer means fewer KMS requests."
  type        = number
  default     = 300

  validation {
    condition     = floor(var.kms_data_key_reuse_period_seconds) == var.kms_data_key_reuse_period_seconds && var.kms_data_key_reuse_period_seconds >= 60 && var.kms_data_key_reuse_period_seconds <= 86400
    error_message = "kms_data_key_reuse_period_seconds must be a whole number of seconds from 60 to 86400 (24 hours)."
  }
}

################################################################################
# Idempotency table
################################################################################

variable "create_table" {
  description = "Create the DynamoDB idempotency and status table. False shares a table created elsewhere, as an app's tiers do (one table for all their queues; the default tier's instance usually creates it): give its ARN in idempotency_table_arn, and the IAM policies, the idempotency_table output and the environment then name that table."
  type        = bool
  default     = true
}

variable "idempotency_table_name" {
  description = "Name of the DynamoDB idempotency and status table this module creates (CLOUDJOBS_IDEMPOTENCY_TABLE). Null names it \"<queue name without .fifo>-idempotency\". Only with create_table: a shared table's name is read from idempotency_table_arn."
  type        = string
  default     = null

  validation {
    condition     = var.idempotency_table_name == null ? true : can(regex("^[A-Za-z0-9_.-]{3,255}$", var.idempotency_table_name))
    error_message = "idempotency_table_name must be 3-255 letters, digits, underscores, hyphens or dots."
  }

  validation {
    condition     = var.create_table || var.idempotency_table_name == null
    error_message = "idempotency_table_name names the table this module creates: with create_table = false, leave it null (the shared table's name comes from idempotency_table_arn)."
  }
}

variable "idempotency_table_arn" {
  description = "With create_table = false (and only then): ARN of the shared idempotency and status table, arn:aws:dynamodb:<region>:<account>:table/<name>, for example another instance's idempotency_table_arn output. Its name (CLOUDJOBS_IDEMPOTENCY_TABLE) is the ARN's last part. The table must have cloudjobs' shape (this module's, or cloudjobs.provisioning's)."
  type        = string
  default     = null

  validation {
    condition     = var.idempotency_table_arn == null ? true : can(regex("^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/[A-Za-z0-9_.-]{3,255}$", var.idempotency_table_arn))
    error_message = "idempotency_table_arn must be a DynamoDB table ARN (arn:aws:dynamodb:<region>:<account>:table/<name>), not a table name or an index ARN."
  }

  validation {
    condition     = (var.idempotency_table_arn == null) == var.create_table
    error_message = "Give idempotency_table_arn exactly when create_table is false: the shared table's ARN, which the policies and the environment need."
  }
}

variable "deletion_protection" {
  description = "Protect the idempotency table from deletion (turn off before destroying the module). Only with create_table."
  type        = bool
  default     = true
}

################################################################################
# IAM
################################################################################

variable "status_tracking" {
  description = "The producer writes a status record for each job it enqueues and reads it back by job id, so producer_policy_json also allows PutItem on the idempotency table and Query on its job_id index, and the environment output sets CLOUDJOBS_STATUS_TRACKING."
  type        = bool
  default     = false
}

variable "unique_jobs" {
  description = "The producer enqueues unique jobs (enqueue(unique_for=...)), so producer_policy_json also allows UpdateItem on the idempotency table (the reservation), GetItem (unique_until=\"finished\" reads the first job's record) and PutItem (that job's pending record)."
  type        = bool
  default     = false
}

variable "job_results" {
  description = "The producer waits for results (jobs.result) and enqueues with track_status=True, so producer_policy_json also allows GetItem and PutItem on the idempotency table and Query on its job_id index."
  type        = bool
  default     = false
}

variable "payload_bucket" {
  description = "Create a bucket for message bodies too large for the queue (cloudjobs sends them as pointers, in the format of AWS's SQS extended client libraries): encrypted (with kms_key_arn when given), public access blocked, TLS only, objects expiring after payload_expiration_days. Producers and consumers may write bodies under cloudjobs/ and consumers read any; operators delete (a purge deletes its bodies). The environment output then sets CLOUDJOBS_PAYLOAD_BUCKET."
  type        = bool
  default     = false
}

variable "payload_bucket_name" {
  description = "Name of the payload bucket; default \"<name without .fifo>-payloads\" (bucket names are global: set one that is yours)."
  type        = string
  default     = null
}

variable "payload_expiration_days" {
  description = "Days after which a stored body expires. Re-sends, dead letters and redrives reuse a body, so it must outlive the dead-letter queue's retention (checked)."
  type        = number
  default     = 15

  validation {
    condition     = floor(var.payload_expiration_days) == var.payload_expiration_days && var.payload_expiration_days * 86400 > var.dlq_retention_seconds
    error_message = "payload_expiration_days must be a whole number of days longer than dlq_retention_seconds."
  }
}

variable "payload_delete" {
  description = "Consumers delete a stored body once its job completed (CLOUDJOBS_PAYLOAD_DELETE); consumer_policy_json then allows s3:DeleteObject too."
  type        = bool
  default     = false
}

variable "eventbridge_scheduler" {
  description = "Schedule with EventBridge Scheduler: create a schedule group named after the queue (without .fifo) and a role the scheduler assumes to send to the queue; producer and consumer policies may then create and delete the one-time schedules of delayed jobs (cloudjobs.delay.*) and pass the role, the operator policy may also sync recurring schedules (cloudjobs schedules sync), and the environment output sets CLOUDJOBS_LONG_DELAYS and CLOUDJOBS_SCHEDULES_MODE to eventbridge with the group and the role. An app with several tiers enables it on its default tier and lists the other tiers' queue ARNs in scheduler_queue_arns."
  type        = bool
  default     = false
}

variable "scheduler_queue_arns" {
  description = "With eventbridge_scheduler: ARNs of the app's other queues (its other tiers) the scheduler's role may send to as well."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.scheduler_queue_arns : can(regex("^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,80}(\\.fifo)?$", arn))])
    error_message = "scheduler_queue_arns must hold SQS queue ARNs (arn:aws:sqs:<region>:<account>:<name>)."
  }
}

################################################################################
# Lambda consumer
################################################################################

variable "lambda_consumer" {
  description = <<-EOT
    Connect a Lambda function to the queue (null: no event source mapping).
    function_name: the function's name or ARN.
    function_timeout_seconds: the function's timeout (1-900 s); the queue's
      visibility timeout must be at least six times it.
    batch_size: records per invocation (1-10 on FIFO queues, 1-10,000 on
      standard queues; above 10 needs a batching window of at least 1 s).
    maximum_batching_window_in_seconds: how long Lambda gathers records
      before invoking (0-300 s).
    maximum_concurrency: most concurrent invocations for this queue (2-1,000),
      or null for no limit.
    enabled: whether the mapping polls the queue.
  EOT
  type = object({
    function_name                      = string
    function_timeout_seconds           = number
    batch_size                         = optional(number, 10)
    maximum_batching_window_in_seconds = optional(number, 0)
    maximum_concurrency                = optional(number)
    enabled                            = optional(bool, true)
  })
  default = null

  validation {
    condition = var.lambda_consumer == null ? true : (
      floor(var.lambda_consumer.function_timeout_seconds) == var.lambda_consumer.function_timeout_seconds
      && var.lambda_consumer.function_timeout_seconds >= 1
      && var.lambda_consumer.function_timeout_seconds <= 900
    )
    error_message = "lambda_consumer.function_timeout_seconds must be a whole number of seconds from 1 to 900."
  }

  validation {
    condition = var.lambda_consumer == null ? true : (
      floor(var.lambda_consumer.batch_size) == var.lambda_consumer.batch_size
      && var.lambda_consumer.batch_size >= 1
      && var.lambda_consumer.batch_size <= (var.fifo_queue ? 10 : 10000)
    )
    error_message = "lambda_consumer.batch_size must be 1-10 on a FIFO queue and 1-10000 on a standard queue."
  }

  validation {
    condition = var.lambda_consumer == null ? true : (
      floor(var.lambda_consumer.maximum_batching_window_in_seconds) == var.lambda_consumer.maximum_batching_window_in_seconds
      && var.lambda_consumer.maximum_batching_window_in_seconds >= 0
      && var.lambda_consumer.maximum_batching_window_in_seconds <= 300
      && (var.lambda_consumer.batch_size <= 10 || var.lambda_consumer.maximum_batching_window_in_seconds >= 1)
    )
    error_message = "lambda_consumer.maximum_batching_window_in_seconds must be 0-300 seconds, and at least 1 when batch_size is above 10."
  }

  validation {
    condition = var.lambda_consumer == null ? true : (
      var.lambda_consumer.maximum_concurrency == null ? true : (
        floor(var.lambda_consumer.maximum_concurrency) == var.lambda_consumer.maximum_concurrency
        && var.lambda_consumer.maximum_concurrency >= 2
        && var.lambda_consumer.maximum_concurrency <= 1000
      )
    )
    error_message = "lambda_consumer.maximum_concurrency must be null or a whole number from 2 to 1000."
  }
}

################################################################################
# Alarms
################################################################################

variable "create_alarms" {
  description = "Create the CloudWatch alarms: the dead-letter queue has messages; the oldest message in the queue is older than oldest_message_age_alarm_seconds."
  type        = bool
  default     = true
}

variable "oldest_message_age_alarm_seconds" {
  description = "Alarm when the queue's ApproximateAgeOfOldestMessage stays above this many seconds for three consecutive minutes (60 s to 14 days)."
  type        = number
  default     = 900

  validation {
    condition     = floor(var.oldest_message_age_alarm_seconds) == var.oldest_message_age_alarm_seconds && var.oldest_message_age_alarm_seconds >= 60 && var.oldest_message_age_alarm_seconds <= 1209600
    error_message = "oldest_message_age_alarm_seconds must be a whole number of seconds from 60 to 1209600 (14 days)."
  }
}

variable "alarm_actions" {
  description = "ARNs to notify when an alarm fires (for example an SNS topic)."
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs to notify when an alarm returns to OK."
  type        = list(string)
  default     = []
}
