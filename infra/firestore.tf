# Firestore in native mode, laid out as internal/store/firestorestore/doc.go,
# internal/ledger/firestoreledger, internal/notify/firestorenotify/doc.go and
# internal/stripeexport/firestoresent/doc.go say.
#
# A project's "(default)" database may exist already (created from the
# console or by App Engine); import it instead of creating it:
#
#   terraform -chdir=infra import google_firestore_database.main "projects/<project>/databases/(default)"

resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  # Key records, hashes and audit entries are the system of record.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.enabled]
}

# ListKeys with an owner, newest first.
resource "google_firestore_index" "keys_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "keys"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

# ListTokens with an owner (GET /v1/tokens?owner=…, and every list by a
# token scoped to an owner), newest first.
resource "google_firestore_index" "tokens_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "tokens"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

# DueSuspensions (the sweep): disabled keys whose suspension has ended,
# by (disabled_until, id).
resource "google_firestore_index" "keys_by_suspension" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "keys"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "disabled_until"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# ListAudit with a key id, newest first.
resource "google_firestore_index" "audit_by_key" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "audit"
  query_scope = "COLLECTION"

  fields {
    field_path = "key_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "time"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

# ChangedOwners (the verifiers' owner change feed), by (updated_at, id):
# the id field, since owner document ids are an encoding that does not
# sort like the ids.
resource "google_firestore_index" "owners_by_update" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "owners"
  query_scope = "COLLECTION"

  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# Suspended owners (ListOwners with Suspended), for the sweep's lifts.
resource "google_firestore_index" "owners_suspended" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "owners"
  query_scope = "COLLECTION"

  fields {
    field_path = "suspended"
    order      = "ASCENDING"
  }
  fields {
    field_path = "id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# Usage counters (internal/ledger/firestoreledger): the sweep's ActiveKeys and
# the billing export across owners, then the export for one owner. Shard
# documents of a key are grouped by key_id.
resource "google_firestore_index" "usage_counters_by_window" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_counters"
  query_scope = "COLLECTION"

  fields {
    field_path = "window"
    order      = "ASCENDING"
  }
  fields {
    field_path = "start"
    order      = "ASCENDING"
  }
  fields {
    field_path = "key_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "usage_counters_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_counters"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "window"
    order      = "ASCENDING"
  }
  fields {
    field_path = "start"
    order      = "ASCENDING"
  }
  fields {
    field_path = "key_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# Usage adjustments (internal/ledger/firestoreledger): a closed month's usage
# counted after it ended, listed by the billing export across owners and for
# one owner. Shard documents of an adjustment are grouped by key_id and
# counted_in.
resource "google_firestore_index" "usage_adjustments_by_month" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_adjustments"
  query_scope = "COLLECTION"

  fields {
    field_path = "month"
    order      = "ASCENDING"
  }
  fields {
    field_path = "key_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "counted_in"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "usage_adjustments_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_adjustments"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "month"
    order      = "ASCENDING"
  }
  fields {
    field_path = "key_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "counted_in"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

# Owner counters (internal/ledger/firestoreledger): an owner's usage series
# (OwnerSeries), and the owners with usage in a window (ActiveOwners, for the
# sweep's owner quotas and the billing export). Shard documents of an owner
# are grouped by owner.
resource "google_firestore_index" "usage_owner_counters_by_owner" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_owner_counters"
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "window"
    order      = "ASCENDING"
  }
  fields {
    field_path = "start"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "usage_owner_counters_by_window" {
  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = "usage_owner_counters"
  query_scope = "COLLECTION"

  fields {
    field_path = "window"
    order      = "ASCENDING"
  }
  fields {
    field_path = "start"
    order      = "ASCENDING"
  }
  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "ASCENDING"
  }
}

locals {
  # Single-field settings. ttl: a TTL policy (Firestore deletes the
  # document within about a day after that time). exempt: no single-field
  # index, because nothing queries the field; it saves index writes and
  # keeps monotonically growing timestamps from capping write throughput.
  # No TTL on keys.expires_at: an expired key is kept and verifies as EXPIRED.
  firestore_fields = {
    "keys/hash"         = { ttl = false, exempt = true } # looked up through key_hashes
    "keys/metadata"     = { ttl = false, exempt = true }
    "keys/limits"       = { ttl = false, exempt = true }
    "keys/restrictions" = { ttl = false, exempt = true }
    "key_hashes/key_id" = { ttl = false, exempt = true }
    # Caller tokens: looked up through token_hashes, listed by created_at
    # and (owner, created_at); nothing queries the other fields.
    "tokens/hash"              = { ttl = false, exempt = true }
    "tokens/name"              = { ttl = false, exempt = true }
    "tokens/permissions"       = { ttl = false, exempt = true }
    "tokens/created_by"        = { ttl = false, exempt = true }
    "tokens/expires_at"        = { ttl = false, exempt = true }
    "tokens/revoked_at"        = { ttl = false, exempt = true }
    "token_hashes/token_id"    = { ttl = false, exempt = true }
    "audit/details"            = { ttl = false, exempt = true }
    "owners/plan"              = { ttl = false, exempt = true }
    "owners/limits"            = { ttl = false, exempt = true }
    "owners/features"          = { ttl = false, exempt = true }
    "owners/suspension"        = { ttl = false, exempt = true }
    "owners/created_at"        = { ttl = false, exempt = true }
    "idempotency/key"          = { ttl = false, exempt = true }
    "idempotency/status"       = { ttl = false, exempt = true }
    "idempotency/request_hash" = { ttl = false, exempt = true }
    "idempotency/key_id"       = { ttl = false, exempt = true }
    "idempotency/state"        = { ttl = false, exempt = true }
    "idempotency/lease_until"  = { ttl = false, exempt = true }
    "idempotency/created_at"   = { ttl = false, exempt = true }
    "idempotency/expires_at"   = { ttl = true, exempt = true }
    # Owner-portal links (store.PortalLinks): read by document id only;
    # useless once expired.
    "portal_links/owner"       = { ttl = false, exempt = true }
    "portal_links/permissions" = { ttl = false, exempt = true }
    "portal_links/return_url"  = { ttl = false, exempt = true }
    "portal_links/created_by"  = { ttl = false, exempt = true }
    "portal_links/created_at"  = { ttl = false, exempt = true }
    "portal_links/used_at"     = { ttl = false, exempt = true }
    "portal_links/expires_at"  = { ttl = true, exempt = true }
    # Usage events kept for deduplication expire after the replay window.
    "usage_events/expire_at" = { ttl = true, exempt = true }
    "usage_events/id"        = { ttl = false, exempt = true }
    "usage_events/key_id"    = { ttl = false, exempt = true }
    "usage_events/time"      = { ttl = false, exempt = true }
    # Counters are rewritten by every increment; start only ever grows.
    "usage_counters/requests" = { ttl = false, exempt = true }
    "usage_counters/units"    = { ttl = false, exempt = true }
    "usage_counters/bytes"    = { ttl = false, exempt = true }
    "usage_counters/cost"     = { ttl = false, exempt = true }
    "usage_counters/shard"    = { ttl = false, exempt = true }
    "usage_counters/start"    = { ttl = false, exempt = true }
    # Owner counters likewise; features is a map rewritten by every increment
    # (each of its fields would be indexed).
    "usage_owner_counters/requests" = { ttl = false, exempt = true }
    "usage_owner_counters/units"    = { ttl = false, exempt = true }
    "usage_owner_counters/bytes"    = { ttl = false, exempt = true }
    "usage_owner_counters/cost"     = { ttl = false, exempt = true }
    "usage_owner_counters/shard"    = { ttl = false, exempt = true }
    "usage_owner_counters/start"    = { ttl = false, exempt = true }
    "usage_owner_counters/features" = { ttl = false, exempt = true }
    # Adjustments likewise: only month, owner, key_id and counted_in are
    # queried, through the composite indexes above.
    "usage_adjustments/requests" = { ttl = false, exempt = true }
    "usage_adjustments/units"    = { ttl = false, exempt = true }
    "usage_adjustments/bytes"    = { ttl = false, exempt = true }
    "usage_adjustments/cost"     = { ttl = false, exempt = true }
    "usage_adjustments/shard"    = { ttl = false, exempt = true }
    "usage_adjustments/features" = { ttl = false, exempt = true }
    "usage_dead_letters/id"      = { ttl = false, exempt = true }
    "usage_dead_letters/reason"  = { ttl = false, exempt = true }
    "usage_dead_letters/detail"  = { ttl = false, exempt = true }
    "usage_dead_letters/payload" = { ttl = false, exempt = true }
    # Client IPs per key and UTC day expire after ledger.ClientIPRetention
    # (8 days). ips is an array: indexed, it would get an array-contains
    # entry per IP; day only ever grows.
    "usage_client_ips/expire_at" = { ttl = true, exempt = true }
    "usage_client_ips/key_id"    = { ttl = false, exempt = true }
    "usage_client_ips/day"       = { ttl = false, exempt = true }
    "usage_client_ips/ips"       = { ttl = false, exempt = true }
    # The Stripe export's record of the meter events Stripe accepted
    # (internal/stripeexport/firestoresent): read by document id only; a
    # record expires after stripeexport.SentRetention (40 days), past the
    # age of any usage event the export still takes.
    "stripe_sent/expire_at"   = { ttl = true, exempt = true }
    "stripe_sent/id"          = { ttl = false, exempt = true }
    "stripe_sent/recorded_at" = { ttl = false, exempt = true }
    # Owner notifications (internal/notify/firestorenotify): no query runs on either
    # collection, so no field is indexed. Delivery records expire after
    # notify.Retention (30 days), which bounds their deduplication.
    "owner_webhooks/owner"              = { ttl = false, exempt = true }
    "owner_webhooks/url"                = { ttl = false, exempt = true }
    "owner_webhooks/events"             = { ttl = false, exempt = true }
    "owner_webhooks/secret_fingerprint" = { ttl = false, exempt = true }
    "owner_webhooks/updated_at"         = { ttl = false, exempt = true }
    "notifications/expire_at"           = { ttl = true, exempt = true }
    "notifications/id"                  = { ttl = false, exempt = true }
    "notifications/owner"               = { ttl = false, exempt = true }
    "notifications/type"                = { ttl = false, exempt = true }
    "notifications/payload"             = { ttl = false, exempt = true }
    "notifications/status"              = { ttl = false, exempt = true }
    "notifications/attempts"            = { ttl = false, exempt = true }
    "notifications/enqueued"            = { ttl = false, exempt = true }
    "notifications/next_attempt_at"     = { ttl = false, exempt = true }
    "notifications/lease"               = { ttl = false, exempt = true }
    "notifications/lease_until"         = { ttl = false, exempt = true }
    "notifications/last_attempt_at"     = { ttl = false, exempt = true }
    "notifications/last_status"         = { ttl = false, exempt = true }
    "notifications/last_error"          = { ttl = false, exempt = true }
    "notifications/reason"              = { ttl = false, exempt = true }
    "notifications/created_at"          = { ttl = false, exempt = true }
    "notifications/updated_at"          = { ttl = false, exempt = true }
  }
}

resource "google_firestore_field" "this" {
  for_each = local.firestore_fields

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = split("/", each.key)[0]
  field      = split("/", each.key)[1]

  dynamic "ttl_config" {
    for_each = each.value.ttl ? [1] : []
    content {}
  }

  # An empty index_config removes every single-field index of the field.
  dynamic "index_config" {
    for_each = each.value.exempt ? [1] : []
    content {}
  }
}
