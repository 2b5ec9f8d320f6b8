output "environment" {
  description = "The CLOUDJOBS_* variables of the app, for producers of these jobs: the default tier's, with CLOUDJOBS_QUEUES for the other two."
  value       = local.environment
}

output "worker_task_role_arn" {
  description = "ARN of the task role for an ECS worker of all three tiers (a task definition as in examples/ecs-worker, with environment above)."
  value       = aws_iam_role.worker.arn
}

output "producer_policy_json" {
  description = "IAM policy (JSON) to attach to the producers' roles: sending to all three tiers."
  value       = data.aws_iam_policy_document.producer.json
}

output "operator_policy_json" {
  description = "IAM policy (JSON) for operators of the three dead-letter queues."
  value       = data.aws_iam_policy_document.operator.json
}
