# Runs the sweep: POST /v1/sweep on the Sweep function, authenticated by an
# OIDC token signed as the scheduler account (the function's only invoker).
# Sweep runs one request at a time on one instance, so a run that outlasts
# the interval makes the next attempt fail and retry instead of overlapping.
resource "google_cloud_scheduler_job" "sweep" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}sweep"
  description      = "keyplane abuse and quota sweep"
  schedule         = var.sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.functions.sweep.timeout_seconds + 20}s"

  retry_config {
    retry_count          = 2
    min_backoff_duration = "30s"
    max_backoff_duration = "120s"
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.fn["sweep"].service_config[0].uri}/v1/sweep"
    body        = base64encode(jsonencode({ dry_run = false }))
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.fn["sweep"].service_config[0].uri
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_service_iam_member.fn_invoker,
  ]
}
