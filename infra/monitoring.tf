# Telemetry (internal/telemetry): the functions run with
# KEYPLANE_TELEMETRY=gcp (local.common_env), so their metrics reach Cloud
# Monitoring as workload.googleapis.com/keyplane.* and their spans (meter
# batches, sweep runs) Cloud Trace.

locals {
  telemetry_roles = ["roles/monitoring.metricWriter", "roles/cloudtrace.agent"]

  fn_telemetry_roles = merge([
    for name, f in local.functions : {
      for role in local.telemetry_roles : "${name} ${role}" => { function = name, role = role }
    }
  ]...)
}

resource "google_project_iam_member" "fn_telemetry_roles" {
  for_each = local.fn_telemetry_roles

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

resource "google_monitoring_dashboard" "keyplane" {
  project        = var.project_id
  dashboard_json = file("${path.module}/dashboard.json")
}

# Usage events that were not counted: poison events, unknown keys,
# messages Pub/Sub gave up on. Any new one needs a look (docs/operations.md,
# "Dead letters").
resource "google_monitoring_alert_policy" "dead_letters_growing" {
  project      = var.project_id
  display_name = "keyplane: usage dead letters growing"
  combiner     = "OR"

  conditions {
    display_name = "new usage dead letters in the last 10 minutes"
    condition_threshold {
      filter          = "metric.type=\"workload.googleapis.com/keyplane.meter.dead_letters\" AND resource.type=\"generic_task\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content   = "Usage events are being dead-lettered instead of counted. List them with GET /v1/usage/dead-letters and see docs/operations.md, \"Dead letters\"."
    mime_type = "text/markdown"
  }
}

# verify sees a revocation within the feed lag: past 2 s (one poll interval
# plus a poll's time), revoked keys may still verify.
resource "google_monitoring_alert_policy" "feed_lag_over_revocation_bound" {
  project      = var.project_id
  display_name = "keyplane: key change feed lag over the revocation bound"
  combiner     = "OR"

  conditions {
    display_name = "feed lag over 2 s for 2 minutes"
    condition_threshold {
      filter          = "metric.type=\"workload.googleapis.com/keyplane.verify.feed_lag\" AND resource.type=\"generic_task\""
      comparison      = "COMPARISON_GT"
      threshold_value = 2
      duration        = "120s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  documentation {
    content   = "The Verify function's key cache is behind the change feed by more than the revocation bound (2 s): revocations may take longer to apply. Check Firestore availability and the function's logs (\"polling the key change feed\")."
    mime_type = "text/markdown"
  }
}
