# Plugin and Packer version requirements, kept apart from the template so that Debian's Packer
# 1.6.6 (which predates `required_plugins`) can still syntax-check al2023-gvisor.pkr.hcl alone.
# `packer init packer/ && packer build packer/` reads both files.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      # Bounded: a new major version of the plugin is adopted by a reviewed change here.
      version = ">= 1.3.0, < 2.0.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
