# The optional Stripe usage export (internal/stripeexport), on with
# var.stripe_meters: a second push subscription of usage-events feeds
# ExportStripe, which sends each counted metric to Stripe meter events.
# It has a dead-letter topic of its own, so that its dead letters never
# reach RecordUsage's and the reverse; a usage message there was counted in
# the ledger, only its export is missing (docs/operations.md, "Stripe
# usage export"):
#
#   gcloud pubsub subscriptions pull <prefix>usage-events-stripe-dead-letter --limit=10

locals {
  stripe_export = var.stripe_meters != ""
  stripe_env    = local.stripe_export ? { KEYPLANE_STRIPE_METERS = var.stripe_meters } : {}
}

resource "google_secret_manager_secret" "stripe_api_key" {
  count = local.stripe_export ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}stripe-api-key"
  labels = {
    app = "keyplane"
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "stripe_api_key" {
  count = local.stripe_export ? 1 : 0

  secret      = google_secret_manager_secret.stripe_api_key[0].id
  secret_data = var.stripe_api_key

  lifecycle {
    precondition {
      condition     = var.stripe_api_key != ""
      error_message = "stripe_meters turns the Stripe export on: set stripe_api_key too (TF_VAR_stripe_api_key)."
    }
  }
}

# Only ExportStripe's account may read the key, with the same narrow custom
# role the named secrets use.
resource "google_secret_manager_secret_iam_member" "export_stripe_api_key" {
  count = local.stripe_export ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.stripe_api_key[0].id
  role      = google_project_iam_custom_role.this["named_secret_reader"].name
  member    = "serviceAccount:${google_service_account.fn["export-stripe"].email}"
}

resource "google_pubsub_topic" "usage_stripe_dead_letter" {
  count = local.stripe_export ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}usage-events-stripe-dead-letter"
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.enabled]
}

# The push subscription that feeds ExportStripe, built like usage_record
# (pubsub.tf). 20 deliveries, 10 s doubling to 600 s, span under three hours:
# every redelivery of an event falls inside the 24 hours in which Stripe
# dedupes its identifier. Keep them equal to
# internal/wire.StripeExportTopic.Retry.
resource "google_pubsub_subscription" "usage_export_stripe" {
  count = local.stripe_export ? 1 : 0

  project = var.project_id
  name    = "${google_pubsub_topic.usage.name}-export-stripe" # the name internal/wire gives its pull twin
  topic   = google_pubsub_topic.usage.id
  labels = {
    app = "keyplane"
  }

  ack_deadline_seconds       = local.functions["export-stripe"].timeout_seconds
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn["export-stripe"].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.usage.name}"

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.fn["export-stripe"].service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.usage_stripe_dead_letter[0].id
    max_delivery_attempts = 20
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.service_agent_stripe_dead_letter,
    google_service_account_iam_member.pubsub_push_token_creator,
  ]
}

# Keeps the export's dead letters for inspection and replay; operators read
# it with their own roles.
resource "google_pubsub_subscription" "usage_stripe_dead_letter" {
  count = local.stripe_export ? 1 : 0

  project = var.project_id
  name    = google_pubsub_topic.usage_stripe_dead_letter[0].name
  topic   = google_pubsub_topic.usage_stripe_dead_letter[0].id
  labels = {
    app = "keyplane"
  }

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "service_agent_stripe_dead_letter" {
  count = local.stripe_export ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.usage_stripe_dead_letter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_usage_export_stripe" {
  count = local.stripe_export ? 1 : 0

  project      = var.project_id
  subscription = google_pubsub_subscription.usage_export_stripe[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
