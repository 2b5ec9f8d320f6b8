# One app with three tiers of jobs (critical, default, bulk): a queue and a
# dead-letter queue each, one idempotency table for all three, one Lambda function
# consuming all three queues, and one task role for an ECS worker that does the
# same. `terraform validate` is not run in CI (no provider downloads there); see
# the module's README.

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}

locals {
  # AWS's guidance for SQS event sources: visibility of at least six times the
  # function's timeout, so a running batch does not reappear. One function, so
  # one timeout for all three tiers.
  visibility_timeout_seconds = 6 * var.function_timeout_seconds

  # How many invocations each tier's event source mapping may run at once. Bulk
  # is capped low, so a backlog of bulk jobs never takes the concurrency that
  # critical jobs need; the function reserves the sum.
  maximum_concurrency = {
    critical = 20
    default  = 10
    bulk     = 5
  }

  # The app's settings: the default tier's queue (CLOUDJOBS_QUEUE_URL), the
  # shared table, and the other tiers' queues as CLOUDJOBS_QUEUES.
  environment = merge(module.default.environment, {
    CLOUDJOBS_QUEUES = join(",", [module.critical.queues_entry, module.bulk.queues_entry])
  })
}

################################################################################
# Encryption key
################################################################################

# One key for the three tiers: the shared table is encrypted with the default
# tier's key, and each tier's policies name its own, so they must be the same.
resource "aws_kms_key" "jobs" {
  description         = "Encrypts the ${var.name} queues, table and function environment."
  enable_key_rotation = true
  # Account principals get access through IAM policies (the module's outputs).
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersThroughIam"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

################################################################################
# Tiers: queues, dead-letter queues, one table
################################################################################

# The default tier creates the table the three tiers share.
module "default" {
  source = "../../modules/cloudjobs-queue"

  name                       = var.name
  visibility_timeout_seconds = local.visibility_timeout_seconds
  kms_key_arn                = aws_kms_key.jobs.arn

  lambda_consumer = {
    function_name                      = aws_lambda_function.consumer.function_name
    function_timeout_seconds           = aws_lambda_function.consumer.timeout
    batch_size                         = 10
    maximum_batching_window_in_seconds = 1
    maximum_concurrency                = local.maximum_concurrency.default
  }
}

module "critical" {
  source = "../../modules/cloudjobs-queue"

  name                       = "${var.name}-critical"
  tier                       = "critical"
  create_table               = false
  idempotency_table_arn      = module.default.idempotency_table_arn
  visibility_timeout_seconds = local.visibility_timeout_seconds
  kms_key_arn                = aws_kms_key.jobs.arn
  # A critical job waiting a minute is already news.
  oldest_message_age_alarm_seconds = 60

  # One job per invocation, started at once: a critical job waits neither for a
  # batch to fill nor behind other jobs of its batch.
  lambda_consumer = {
    function_name                      = aws_lambda_function.consumer.function_name
    function_timeout_seconds           = aws_lambda_function.consumer.timeout
    batch_size                         = 1
    maximum_batching_window_in_seconds = 0
    maximum_concurrency                = local.maximum_concurrency.critical
  }
}

module "bulk" {
  source = "../../modules/cloudjobs-queue"

  name                       = "${var.name}-bulk"
  tier                       = "bulk"
  create_table               = false
  idempotency_table_arn      = module.default.idempotency_table_arn
  visibility_timeout_seconds = local.visibility_timeout_seconds
  kms_key_arn                = aws_kms_key.jobs.arn
  # Bulk work may queue up for a while before it is late.
  oldest_message_age_alarm_seconds = 3600

  # Full batches, gathered for up to 10 s: fewer invocations for the same work.
  # (Larger batches need jobs short enough to all start within the function's
  # timeout: a record released unstarted spends one of its receives.)
  lambda_consumer = {
    function_name                      = aws_lambda_function.consumer.function_name
    function_timeout_seconds           = aws_lambda_function.consumer.timeout
    batch_size                         = 10
    maximum_batching_window_in_seconds = 10
    maximum_concurrency                = local.maximum_concurrency.bulk
  }
}

################################################################################
# IAM: one policy per role for all three tiers
################################################################################

# The modules' documents merged: their statement ids end with the tier, so none
# is repeated. Both consumers (the function and the worker) get the same policy.
data "aws_iam_policy_document" "consumer" {
  source_policy_documents = [
    module.critical.consumer_policy_json,
    module.default.consumer_policy_json,
    module.bulk.consumer_policy_json,
  ]
}

data "aws_iam_policy_document" "producer" {
  source_policy_documents = [
    module.critical.producer_policy_json,
    module.default.producer_policy_json,
    module.bulk.producer_policy_json,
  ]
}

data "aws_iam_policy_document" "operator" {
  source_policy_documents = [
    module.critical.operator_policy_json,
    module.default.operator_policy_json,
    module.bulk.operator_policy_json,
  ]
}

################################################################################
# Function
################################################################################

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "consumer" {
  name               = "${var.name}-consumer"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "consumer" {
  name   = "cloudjobs-consumer"
  role   = aws_iam_role.consumer.id
  policy = data.aws_iam_policy_document.consumer.json
}

resource "aws_cloudwatch_log_group" "consumer" {
  name              = "/aws/lambda/${var.name}-consumer"
  retention_in_days = 365
}

data "aws_iam_policy_document" "logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.consumer.arn}:*"]
  }
}

resource "aws_iam_role_policy" "logs" {
  name   = "write-logs"
  role   = aws_iam_role.consumer.id
  policy = data.aws_iam_policy_document.logs.json
}

resource "aws_lambda_function" "consumer" {
  function_name    = "${var.name}-consumer"
  role             = aws_iam_role.consumer.arn
  runtime          = "python3.12"
  handler          = var.handler
  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)
  timeout          = var.function_timeout_seconds
  memory_size      = 512
  # The three mappings' maximum concurrency together, so SQS polling is not
  # throttled by other functions in the account.
  reserved_concurrent_executions = sum(values(local.maximum_concurrency))
  kms_key_arn                    = aws_kms_key.jobs.arn

  environment {
    variables = local.environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.consumer.name
  }

  # The event source mappings check the role's SQS permissions when they are created.
  depends_on = [aws_iam_role_policy.consumer, aws_iam_role_policy.logs]
}

################################################################################
# Worker
################################################################################

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The role an ECS worker's code runs as; its task definition is as in
# examples/ecs-worker, with local.environment as its environment.
resource "aws_iam_role" "worker" {
  name               = "${var.name}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "cloudjobs-consumer"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.consumer.json
}
