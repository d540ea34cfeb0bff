# The shared limiter (var.shared_limiter, default off): a Memorystore for
# Redis instance counting every Verify instance's per-minute admissions
# (internal/limiter/redislimiter), and the Serverless VPC Access connector
# through which Verify reaches it. Memorystore has only a private address in
# var.shared_limiter_network, so:
#
#   - the connector must be in the same region and network as the instance;
#     Verify sends only private-range traffic through it (its Firestore,
#     Secret Manager and Pub/Sub calls keep going out directly);
#   - the deployer needs redis.instances.create and vpcaccess.connectors.create
#     (roles/redis.admin, roles/vpcaccess.admin) besides what main.tf lists,
#     and the network must exist;
#   - Verify's service account gets no Redis role: Memorystore for Redis is
#     authorized by network and AUTH string, not IAM. It reads the AUTH
#     string (secret "<prefix>redis-auth") and nothing else new.
#
# In-transit encryption is on (port 6378, the instance's own CA, passed to
# Verify as KEYPLANE_REDIS_CA); STANDARD_HA keeps a replica, so a failover
# keeps the counts (a BASIC instance restarting loses the minute's counts:
# that minute may admit one more limit, docs/architecture.md).

locals {
  shared_limiter = var.shared_limiter

  # Verify's environment for the shared limiter (the AUTH string comes from
  # Secret Manager, functions.tf).
  shared_limiter_env = local.shared_limiter ? {
    KEYPLANE_REDIS_ADDR = "${google_redis_instance.limiter[0].host}:${google_redis_instance.limiter[0].port}"
    KEYPLANE_REDIS_TLS  = "1"
    KEYPLANE_REDIS_CA   = google_redis_instance.limiter[0].server_ca_certs[0].cert
  } : {}
}

resource "google_project_service" "shared_limiter" {
  for_each = toset(local.shared_limiter ? ["redis.googleapis.com", "vpcaccess.googleapis.com"] : [])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

resource "google_redis_instance" "limiter" {
  count = local.shared_limiter ? 1 : 0

  project                 = var.project_id
  region                  = var.region
  name                    = "${var.name_prefix}limiter"
  display_name            = "keyplane per-minute limits"
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.shared_limiter_memory_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = var.shared_limiter_network
  connect_mode            = "DIRECT_PEERING"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  # Counters expire after 2 minutes; nothing is worth persisting.
  persistence_config {
    persistence_mode = "DISABLED"
  }
  labels = {
    app = "keyplane"
  }

  depends_on = [google_project_service.shared_limiter]
}

resource "google_vpc_access_connector" "limiter" {
  count = local.shared_limiter ? 1 : 0

  project       = var.project_id
  region        = var.region
  name          = "${var.name_prefix}lim"
  network       = var.shared_limiter_network
  ip_cidr_range = var.shared_limiter_connector_cidr
  min_instances = 2
  max_instances = 10

  depends_on = [google_project_service.shared_limiter]
}

# The AUTH string, as a secret Verify reads into KEYPLANE_REDIS_AUTH.
resource "google_secret_manager_secret" "redis_auth" {
  count = local.shared_limiter ? 1 : 0

  project   = var.project_id
  secret_id = "${var.name_prefix}redis-auth"
  labels = {
    app = "keyplane"
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "redis_auth" {
  count = local.shared_limiter ? 1 : 0

  secret      = google_secret_manager_secret.redis_auth[0].id
  secret_data = google_redis_instance.limiter[0].auth_string
}

resource "google_secret_manager_secret_iam_member" "verify_redis_auth" {
  count = local.shared_limiter ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.redis_auth[0].id
  role      = google_project_iam_custom_role.this["named_secret_reader"].name
  member    = "serviceAccount:${google_service_account.fn["verify"].email}"
}
