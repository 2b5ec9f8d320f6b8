# An ECS (Fargate) worker for cloudjobs: queues, table, alarms, IAM roles and the
# task definition. A service, cluster and network are left to your platform.
# `terraform validate` is not run in CI (no provider downloads there); see the
# module's README.

provider "aws" {
  region = var.region
}

data "aws_region" "current" {}

################################################################################
# Queue, dead-letter queue, table
################################################################################

module "jobs" {
  source = "../../modules/cloudjobs-queue"

  name = var.name
  # Long enough for most jobs; the worker's heartbeat extends it while a job runs.
  visibility_timeout_seconds = 120
  alarm_actions              = [aws_sns_topic.alarms.arn]
  ok_actions                 = [aws_sns_topic.alarms.arn]
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = "alias/aws/sns"
}

################################################################################
# IAM
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

# The task role is what the worker's code runs as: the module's consumer policy.
resource "aws_iam_role" "task" {
  name               = "${var.name}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "task" {
  name   = "cloudjobs-consumer"
  role   = aws_iam_role.task.id
  policy = module.jobs.consumer_policy_json
}

# The execution role is what ECS uses to pull the image and ship logs.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-worker-execution"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

################################################################################
# Task definition
################################################################################

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecs/${var.name}-worker"
  retention_in_days = 365
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name      = "worker"
    image     = var.image
    essential = true
    command   = ["cloudjobs", "worker", var.app]
    # SIGTERM starts a graceful stop; ECS kills the container after stopTimeout.
    stopTimeout            = var.shutdown_timeout_seconds + 15
    readonlyRootFilesystem = true
    environment = [
      for name, value in merge(module.jobs.environment, {
        CLOUDJOBS_CONCURRENCY              = tostring(var.concurrency)
        CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS = tostring(var.shutdown_timeout_seconds)
      }) : { name = name, value = value }
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = data.aws_region.current.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])
}
