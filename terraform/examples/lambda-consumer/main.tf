# A Lambda function consuming cloudjobs jobs, with a customer-managed KMS key for
# the queues and the table. `terraform validate` is not run in CI (no provider
# downloads there); see the module's README.

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}

locals {
  # AWS's guidance for SQS event sources: visibility of at least six times the
  # function's timeout, so a running batch does not reappear.
  visibility_timeout_seconds = 6 * var.function_timeout_seconds
  maximum_concurrency        = 10
}

################################################################################
# Encryption key
################################################################################

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
# Queue, dead-letter queue, table
################################################################################

module "jobs" {
  source = "../../modules/cloudjobs-queue"

  name                       = var.name
  visibility_timeout_seconds = local.visibility_timeout_seconds
  kms_key_arn                = aws_kms_key.jobs.arn

  lambda_consumer = {
    function_name                      = aws_lambda_function.consumer.function_name
    function_timeout_seconds           = aws_lambda_function.consumer.timeout
    batch_size                         = 10
    maximum_batching_window_in_seconds = 1
    maximum_concurrency                = local.maximum_concurrency
  }
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
  policy = module.jobs.consumer_policy_json
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
  # At least the event source mapping's maximum concurrency, so SQS polling is
  # not throttled by other functions in the account.
  reserved_concurrent_executions = local.maximum_concurrency
  kms_key_arn                    = aws_kms_key.jobs.arn

  environment {
    variables = module.jobs.environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.consumer.name
  }

  # The event source mapping checks the role's SQS permissions when it is created.
  depends_on = [aws_iam_role_policy.consumer, aws_iam_role_policy.logs]
}
