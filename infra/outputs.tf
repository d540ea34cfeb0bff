output "function_urls" {
  description = "URL of each function, by its short name. Callers that authenticate to Cloud Run use it as their ID token's audience."
  value       = { for name, f in google_cloudfunctions2_function.fn : name => f.service_config[0].uri }
}

output "faces_url" {
  description = "Where people open the operator console (<url>/console) and the owner portal's links: the public Faces function (KEYPLANE_PORTAL_URL of the Keys function)."
  value       = local.faces_url
}

output "function_service_accounts" {
  description = "The service account each function runs as."
  value       = { for name, sa in google_service_account.fn : name => sa.email }
}

output "usage_topic" {
  description = "Topic of usage events (gateways with publish rights may publish to it directly)."
  value       = google_pubsub_topic.usage.name
}

output "usage_dead_letter_topic" {
  description = "Where usage events RecordUsage keeps failing end up."
  value       = google_pubsub_topic.usage_dead_letter.name
}

output "notifications_topic" {
  description = "Topic of owner notifications (Keys and the sweep publish them, DeliverNotification delivers them)."
  value       = google_pubsub_topic.notifications.name
}

output "notifications_dead_letter_topic" {
  description = "Dead-letter topic of owner notifications."
  value       = google_pubsub_topic.notifications_dead_letter.name
}

output "dead_letter_subscriptions" {
  description = "Pull subscriptions holding dead letters, for inspection and replay."
  value       = { for name, s in google_pubsub_subscription.dead_letter : name => s.name }
}

output "sweep_scheduler_job" {
  description = "The Cloud Scheduler job that runs the sweep."
  value       = google_cloud_scheduler_job.sweep.name
}

output "secret_ids" {
  description = "Secret Manager ids of the deployment secrets (their values are never output)."
  value       = { for name, id in local.named_secret_ids : name => split("/", id)[3] }
}
