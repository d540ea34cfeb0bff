# Usage events travel webhook → usage-events → (push) RecordUsage. Pub/Sub
# delivers at least once; RecordUsage counts each event id once. A message
# RecordUsage keeps failing (an error answer, 10 times) is forwarded to
# usage-events-dead-letter, where the pull subscription keeps it for
# inspection and replay:
#
#   gcloud pubsub subscriptions pull <prefix>usage-events-dead-letter --limit=10
#
# Owner notifications travel Keys / the sweep → notifications → (push)
# DeliverNotification. Each message asks for one delivery attempt of one
# notification (internal/notify): DeliverNotification answers an error for a
# message that is not due yet, so Pub/Sub redelivers it after its backoff
# (5 s doubling to 600 s), and publishes a new message for each retry of the
# schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h). A message still failing
# after 100 deliveries (a backend down for hours, not a receiver that
# fails: that is the schedule's to count) goes to notifications-dead-letter,
# where the pull subscription keeps it for inspection:
#
#   gcloud pubsub subscriptions pull <prefix>notifications-dead-letter --limit=10

resource "google_pubsub_topic" "usage" {
  project = var.project_id
  name    = "${var.name_prefix}usage-events"
  labels = {
    app = "keyplane"
  }

  # Usage events are what billing is computed from: keep a week of them on
  # the topic, so that a subscription can be rewound (seek) after a bug.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "usage_dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}usage-events-dead-letter"
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "notifications" {
  project = var.project_id
  name    = "${var.name_prefix}notifications"
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "notifications_dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}notifications-dead-letter"
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.enabled]
}

locals {
  # Topics by the names local.functions uses in publishes_to.
  topic_names = {
    usage         = google_pubsub_topic.usage.name
    notifications = google_pubsub_topic.notifications.name
  }

  fn_publishes = merge([
    for name, f in local.functions : {
      for topic in f.publishes_to : "${name} ${topic}" => { function = name, topic = topic }
    }
  ]...)

  dead_letter_topics = {
    usage         = google_pubsub_topic.usage_dead_letter
    notifications = google_pubsub_topic.notifications_dead_letter
  }
}

# Topic-level publisher grants: the webhook may publish usage events; Keys,
# the sweep and DeliverNotification (retries) notifications; none anything
# else.
resource "google_pubsub_topic_iam_member" "fn_publisher" {
  for_each = local.fn_publishes

  project = var.project_id
  topic   = local.topic_names[each.value.topic]
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

# The push subscription that feeds RecordUsage. The endpoint's path names
# the topic, which is how the Functions Framework recognises a Pub/Sub push
# envelope and hands RecordUsage a CloudEvent. The OIDC token is signed as
# the push account, the only invoker of the function, with the function's
# URL as its audience.
resource "google_pubsub_subscription" "usage_record" {
  project = var.project_id
  name    = "${google_pubsub_topic.usage.name}-record-usage" # the name internal/wire gives its pull twin
  topic   = google_pubsub_topic.usage.id
  labels = {
    app = "keyplane"
  }

  # For push, the time Pub/Sub waits for the HTTP answer: the function's
  # timeout, so that a slow success is not redelivered meanwhile.
  ack_deadline_seconds       = local.functions["record-usage"].timeout_seconds
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn["record-usage"].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.usage.name}"

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.fn["record-usage"].service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.usage_dead_letter.id
    max_delivery_attempts = 10
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # Never delete the subscription for inactivity.
  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.service_agent_dead_letter,
    google_service_account_iam_member.pubsub_push_token_creator,
  ]
}

# The push subscription that feeds DeliverNotification, built like
# usage_record above. Its retry policy and dead-letter policy are part of
# internal/notify's retry schedule: the 5 s minimum backoff is the schedule's
# first retry, the 600 s maximum bounds how late a later retry is made, and
# 100 deliveries (Pub/Sub's maximum) outlast the schedule's longest gap,
# 10 h, which takes 67 to 82 deliveries of one message. Keep them equal to
# internal/wire.NotificationsTopic.Retry.
resource "google_pubsub_subscription" "notifications_deliver" {
  project = var.project_id
  name    = "${google_pubsub_topic.notifications.name}-deliver-notifications" # the name internal/wire gives its pull twin
  topic   = google_pubsub_topic.notifications.id
  labels = {
    app = "keyplane"
  }

  # One attempt is bounded by internal/notify.DefaultTimeout (10 s); the rest is
  # headroom for the store and a cold start.
  ack_deadline_seconds = local.functions["deliver-notify"].timeout_seconds
  # A message waits at most one gap of the schedule (10 h) plus its
  # deliveries; a day covers it with room for an outage.
  message_retention_duration = "86400s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn["deliver-notify"].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.notifications.name}"

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.fn["deliver-notify"].service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.notifications_dead_letter.id
    max_delivery_attempts = 100
  }

  retry_policy {
    minimum_backoff = "5s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.service_agent_dead_letter,
    google_service_account_iam_member.pubsub_push_token_creator,
  ]
}

# Pull subscriptions on the dead-letter topics, so that letters are kept
# (a topic without a subscription drops its messages) and can be read and
# replayed. Operators read them with their own roles; no function does.
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.dead_letter_topics

  project = var.project_id
  name    = each.value.name
  topic   = each.value.id
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

# The Pub/Sub service agent forwards undeliverable messages: it must be
# able to publish to the dead-letter topics and to acknowledge the
# forwarded message on the source subscription.
resource "google_pubsub_topic_iam_member" "service_agent_dead_letter" {
  for_each = local.dead_letter_topics

  project = var.project_id
  topic   = each.value.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_usage_record" {
  project      = var.project_id
  subscription = google_pubsub_subscription.usage_record.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_notifications_deliver" {
  project      = var.project_id
  subscription = google_pubsub_subscription.notifications_deliver.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
