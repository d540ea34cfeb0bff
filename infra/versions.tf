terraform {
  # Bounds: the lowest version that has every feature used here, and below
  # the next major version (a major may remove or rename what infra/ uses).
  # The exact versions in use are pinned by .terraform.lock.hcl, which
  # `terraform init` writes and which is committed by the deployer (see
  # docs/operations.md, "Provider versions").
  required_version = ">= 1.5, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    # random_bytes (the webhook secret) exists from 3.6.0 on.
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
    # Glob patterns in archive_file.excludes need 2.5 or later (2.4 takes
    # them as literal paths and silently zips the tests).
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.5, < 3.0"
    }
  }

  # State lives in a GCS bucket named at init time:
  #
  #   terraform -chdir=infra init -backend-config=bucket=<state bucket>
  #
  # The state holds the generated secrets (see secrets.tf): the bucket must
  # be private, versioned, and readable only by the deployers. Offline
  # checks use `terraform -chdir=infra init -backend=false`, which needs
  # neither the bucket nor credentials (the providers are still downloaded).
  backend "gcs" {
    prefix = "keyplane"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
