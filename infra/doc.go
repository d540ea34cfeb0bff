// Package infra holds keyplane's Terraform; its Go tests check the HCL offline.
//
// The tests need no credentials, no network and no Terraform providers:
// they parse every .tf file, check `terraform fmt` formatting, keep the
// function set (local.functions) in step with the entry points register.go
// registers, and check the environment, dead-letter policies, IAM roles and
// the deploy source's excludes against the code they depend on. What only a
// real apply can show (that the APIs accept the resources, that the IAM
// conditions and grants suffice) is listed in main.tf's header.
package infra
