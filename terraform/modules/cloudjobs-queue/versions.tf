terraform {
  # 1.9 lets a variable's validation refer to other variables (retention, FIFO options).
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.8.0 is the first 6.x release whose aws_sqs_queue accepts a max_message_size
      # above 262,144 bytes (up to 1 MiB); see the README's "Provider version".
      version = "~> 6.8"
    }
  }
}
