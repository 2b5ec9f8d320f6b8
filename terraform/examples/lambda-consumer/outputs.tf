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
