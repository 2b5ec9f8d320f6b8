output "task_definition_arn" {
  description = "ARN of the worker's task definition, for your ECS service."
  value       = aws_ecs_task_definition.worker.arn
}

output "environment" {
  description = "The CLOUDJOBS_* variables for producers of these jobs."
  value       = module.jobs.environment
}

output "producer_policy_json" {
  description = "IAM policy (JSON) to attach to the producers' roles."
  value       = module.jobs.producer_policy_json
}

output "operator_policy_json" {
  description = "IAM policy (JSON) for operators of the dead-letter queue."
  value       = module.jobs.operator_policy_json
}
