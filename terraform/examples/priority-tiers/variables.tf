variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the default tier's queue; the other tiers' queues are \"<name>-critical\" and \"<name>-bulk\", and the table, function, roles and key are named after it."
  type        = string
  default     = "cloudjobs-tiers-example"
}

variable "package_path" {
  description = "Path of the function's deployment package (a zip of your code, cloudjobs and its dependencies; examples/lambda_consumer/README.md builds one)."
  type        = string
  default     = "build/consumer.zip"
}

variable "handler" {
  description = "The function's handler as module.function: the object built by jobs.lambda_handler()."
  type        = string
  default     = "app.handler"
}

variable "function_timeout_seconds" {
  description = "The function's timeout in seconds (1-900); every tier's queue has a visibility timeout of six times it."
  type        = number
  default     = 60

  validation {
    condition     = floor(var.function_timeout_seconds) == var.function_timeout_seconds && var.function_timeout_seconds >= 1 && var.function_timeout_seconds <= 900
    error_message = "function_timeout_seconds must be a whole number of seconds from 1 to 900."
  }
}
