variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the job queue; the task definition and roles are named after it."
  type        = string
  default     = "cloudjobs-ecs-example"
}

variable "image" {
  description = "Container image holding your code and cloudjobs (for example an ECR repository URL with a tag)."
  type        = string
}

variable "app" {
  description = "The CloudJobs instance the worker runs, as module:attribute (passed to `cloudjobs worker`)."
  type        = string
  default     = "app.jobs:jobs"
}

variable "concurrency" {
  description = "Handlers a worker runs at once (CLOUDJOBS_CONCURRENCY, 1-1024)."
  type        = number
  default     = 8

  validation {
    condition     = floor(var.concurrency) == var.concurrency && var.concurrency >= 1 && var.concurrency <= 1024
    error_message = "concurrency must be a whole number from 1 to 1024."
  }
}

variable "shutdown_timeout_seconds" {
  description = "How long a stopping worker waits for running jobs (CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS); ECS is told to wait 15 s longer before it kills the container (at most 120 s on Fargate)."
  type        = number
  default     = 30

  validation {
    condition     = var.shutdown_timeout_seconds >= 0 && var.shutdown_timeout_seconds <= 105
    error_message = "shutdown_timeout_seconds must be from 0 to 105, so that ECS's stop timeout (15 s more) stays within Fargate's 120 s."
  }
}
